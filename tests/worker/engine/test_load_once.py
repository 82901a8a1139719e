"""An analysis loads its model file once, in every format: the dataset is bound to the inputs the
opened model declares (TorchScript and ``.pt2`` loading runs the archive's code and, on a large
graph, takes seconds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze
from worker.engine.capture import exported_model, onnx_model, torchscript_model

CONFIG = AnalysisConfig.model_validate({"pairs": {"count": 20}, "transition_density": None})


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _save(fmt: str, out: Path) -> Path:
    net, example = _net(), torch.zeros(2, 6)
    if fmt == "torchscript":
        path = out / "m.pt"
        torch.jit.save(torch.jit.trace(net, example), str(path))
    elif fmt == "pt2":
        path = out / "m.pt2"
        batch = torch.export.Dim("batch", min=1)
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), str(path))
    else:
        path = out / "m.onnx"
        torch.onnx.export(
            net, (example,), str(path), input_names=["x"], dynamic_axes={"x": {0: "b"}}, dynamo=False
        )
    return path


LOADERS: dict[str, tuple[Any, str]] = {
    "torchscript": (torchscript_model, "load_script"),
    "pt2": (exported_model, "load_program"),
    "onnx": (onnx_model, "load_proto"),
}


@pytest.mark.parametrize("fmt", sorted(LOADERS))
def test_the_model_file_is_loaded_once(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _save(fmt, tmp_path)
    dataset = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(dataset, x=rng.normal(size=(40, 6)).astype(np.float32), y=rng.integers(0, 3, 40))
    module, name = LOADERS[fmt]
    original: Callable[..., Any] = getattr(module, name)
    calls: list[Path] = []

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    report = analyze(model, dataset, CONFIG, trusted_model=True)
    assert len(calls) == 1, calls
    assert report.model.neurons == 8 and report.dataset.samples == 40
