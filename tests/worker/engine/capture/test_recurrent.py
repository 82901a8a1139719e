"""Recurrent layers whose gates are not analysed are named in ``model.warnings`` by every front end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from worker.engine.capture.loader import open_model


class _Recurrent(nn.Module):
    """An LSTM or GRU encoder with a ReLU head: the head is a layer, the gates are not."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True) if kind == "LSTM" else nn.GRU(4, 8, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("rnn", ["LSTM", "GRU"])
@pytest.mark.parametrize("kind", ["scripted", "traced", "pt2", "onnx-legacy", "onnx-dynamo"])
def test_recurrent_gates_are_reported_as_not_analysed(rnn: str, kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Recurrent(rnn).eval()
    x = torch.randn(6, 5, 4)
    path = tmp_path / "model"
    if kind in ("scripted", "traced"):
        save_script(net, [x[:2]] if kind == "traced" else None, path)
    elif kind == "pt2":
        save_exported(net, [x[:2]], path)
    else:
        export_onnx(net, [x[:2]], path, dynamo=kind == "onnx-dynamo", opset=18)
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == ["relu"]
    assert len(model.warnings) == 1 and model.warnings[0].startswith(rnn)
    assert "gates" in model.warnings[0] and "not analysed" in model.warnings[0]
    if kind != "onnx-legacy":
        assert "'rnn'" in model.warnings[0], model.warnings
    with torch.no_grad():
        hidden = net.head[0](net.rnn(x)[0][:, -1])
    assert close(result.pre[0], hidden, atol=1e-4)
