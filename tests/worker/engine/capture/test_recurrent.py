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


@pytest.mark.parametrize(
    ("rnn", "kind"),
    [
        (rnn, kind)
        for rnn in ("LSTM", "GRU")
        for kind in ("scripted", "traced", "pt2", "onnx-legacy", "onnx-dynamo")
        if (rnn, kind) != ("LSTM", "pt2")  # analysed: test_lstm_gates_of_a_pt2_are_layers
    ],
)
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


def _unrolled_gates(net: _Recurrent, x: torch.Tensor) -> list[torch.Tensor]:
    """Pre-activations of the input, forget, cell and output gates and of the cell state's tanh,
    ``[B, T * H]`` each, from an ``nn.LSTMCell`` with the LSTM's weights stepped over time."""
    lstm = net.rnn
    assert isinstance(lstm, nn.LSTM)
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    with torch.no_grad():
        cell.weight_ih.copy_(lstm.weight_ih_l0)
        cell.weight_hh.copy_(lstm.weight_hh_l0)
        cell.bias_ih.copy_(lstm.bias_ih_l0)
        cell.bias_hh.copy_(lstm.bias_hh_l0)
        h = torch.zeros(x.shape[0], lstm.hidden_size)
        c = torch.zeros_like(h)
        steps: list[list[torch.Tensor]] = [[], [], [], [], []]
        for t in range(x.shape[1]):
            gates = x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            for k, gate in enumerate(gates.chunk(4, dim=1)):
                steps[k].append(gate)
            h, c = cell(x[:, t], (h, c))
            steps[4].append(c)
    return [torch.stack(step, dim=1).reshape(x.shape[0], -1) for step in steps]


def test_lstm_gates_of_a_pt2_are_layers(tmp_path: Path) -> None:
    """A one-layer LSTM in a ``.pt2``: its four gates and its cell state are layers (Γ of sigmoid
    and tanh), recomputed exactly from the op's input and output; no warning is left."""
    torch.manual_seed(0)
    net = _Recurrent("LSTM").eval()
    x = torch.randn(6, 5, 4)
    model = open_model(
        save_exported(net, [x[:2]], tmp_path / "lstm.pt2"), device="cpu", example=np_batch(x=x[:2])
    )

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type, layer.shape) for layer in model.layers] == [
        ("head.1:relu", "relu", (8,)),
        ("rnn:input_gate", "sigmoid", (5, 8)),
        ("rnn:forget_gate", "sigmoid", (5, 8)),
        ("rnn:cell_gate", "tanh", (5, 8)),
        ("rnn:output_gate", "sigmoid", (5, 8)),
        ("rnn:cell", "tanh", (5, 8)),
    ]
    assert model.warnings == []
    expected = _unrolled_gates(net, x)
    for k, pre in enumerate(expected, start=1):
        assert close(result.pre[k], pre, atol=1e-5), model.layers[k].name
        activation = torch.tanh if model.layers[k].op_type == "tanh" else torch.sigmoid
        assert close(result.post[k], activation(pre), atol=1e-5), model.layers[k].name
    only = open_model(
        tmp_path / "lstm.pt2", device="cpu", example=np_batch(x=x[:2]), layer_names=["rnn:forget_gate"]
    )
    assert close(only.capture(np_batch(x=x)).pre[0], expected[1], atol=1e-5)
