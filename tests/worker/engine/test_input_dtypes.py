"""Float token ids are checked the same way for every format that declares integer inputs:
whole numbers are cast (and the model runs), anything else is refused before the model runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from worker.engine.capture.loader import model_inputs, open_model
from worker.engine.errors import AnalysisError
from worker.engine.inputs import bind_inputs


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.embed(ids))).mean(dim=1)


def _save(kind: str, net: nn.Module, ids: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind in ("traced", "scripted"):
            saved = torch.jit.trace(net, (ids,)) if kind == "traced" else torch.jit.script(net)
            torch.jit.save(saved, str(path))
        elif kind == "pt2":
            batch = torch.export.Dim("batch")
            torch.export.save(torch.export.export(net, (ids,), dynamic_shapes=({0: batch},)), str(path))
        else:
            torch.onnx.export(
                net, (ids,), str(path), dynamo=False, input_names=["ids"], dynamic_axes={"ids": {0: "b"}}
            )
    return path


@pytest.mark.parametrize("kind", ["onnx", "traced", "scripted", "pt2"])
def test_float_token_ids_are_cast_when_whole_and_refused_otherwise(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Tokens().eval()
    ids = torch.randint(0, 10, (5, 3))
    path = _save(kind, net, ids[:2], tmp_path / "model")
    specs = model_inputs(path)
    assert [(s.name, s.dtype) for s in specs] == [("ids", "int64")]

    bound = bind_inputs({"x": ids.numpy().astype(np.float32)}, specs)

    assert bound.arrays["ids"].dtype == np.int64 and np.array_equal(bound.arrays["ids"], ids.numpy())
    model = open_model(path, device="cpu", example=bound.batch(0, 2))
    assert torch.allclose(model.infer(bound.arrays), net(ids).detach(), atol=1e-5)
    fractional = ids.numpy().astype(np.float32)
    fractional[3, 1] = 1.5
    with pytest.raises(AnalysisError) as caught:
        bind_inputs({"x": fractional}, specs)
    assert caught.value.code == "dataset_invalid"
    assert "'ids'" in caught.value.message and "1.5" in caught.value.message
