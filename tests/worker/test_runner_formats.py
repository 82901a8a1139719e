"""The analysis process refuses PyTorch-format models by content when they are switched off:
``.pt2`` and TorchScript alike (NEURONSCOPE_ALLOW_TORCHSCRIPT=false covers both)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from worker.child.runner import refuse_torchscript
from worker.engine.errors import AnalysisError


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


def test_pt2_and_torchscript_are_refused_by_content_and_onnx_is_not(tmp_path: Path) -> None:
    exported = tmp_path / "model.onnx"  # names are not trusted
    torch.export.save(torch.export.export(_net(), (torch.randn(2, 4),)), str(exported))
    scripted = tmp_path / "model.bin"
    torch.jit.save(torch.jit.script(_net()), str(scripted))
    onnx = tmp_path / "model.pt2"
    torch.onnx.export(_net(), (torch.randn(2, 4),), str(onnx), dynamo=False)

    for path, found in ((exported, "pt2"), (scripted, "torchscript")):
        with pytest.raises(AnalysisError) as caught:
            refuse_torchscript(path)
        assert caught.value.code == "torchscript_disabled" and f"({found})" in caught.value.message
    refuse_torchscript(onnx)
