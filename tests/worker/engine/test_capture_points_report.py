"""A capture point through the whole analysis: a Linear's output before BatchNorm reported as a
layer with the config's Γ, its health equal to a brute-force count on eager PyTorch's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze
from worker.engine.errors import AnalysisError


def _model(tmp_path: Path, x: torch.Tensor) -> tuple[nn.Module, Path]:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        net[0].bias[:3] = 20.0
    path = tmp_path / "model.pt2"
    program = torch.export.export(net, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return net, path


@pytest.mark.parametrize("space", ["pre", "post"])
def test_a_capture_point_is_a_layer_with_its_own_breakpoints(tmp_path: Path, space: str) -> None:
    x = torch.randn(40, 5)
    net, model = _model(tmp_path, x)
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy(), y=np.arange(40) % 3)
    gamma = [-1.0, 0.0, 1.0]
    config = AnalysisConfig.model_validate(
        {
            "device": "cpu",
            "space": space,
            "capture_points": [{"tensor": "0", "breakpoints": gamma, "name": "linear"}],
            "transition_density": {"pairs": {"count": 4}, "points": 8},
        }
    )

    report = analyze(model, dataset, config, trusted_model=True)

    info = {layer.name: layer for layer in report.model.layers}
    assert info["linear"].op_type == "identity" and info["linear"].breakpoints == gamma
    assert info["linear"].neurons == 8
    with torch.no_grad():
        values = net[0](x)
    regions = torch.bucketize(values, torch.tensor(gamma), right=False)
    dead = sum(int(regions[:, j].unique().numel() == 1) for j in range(8))
    health = {layer.name: layer for layer in report.layers}
    assert health["linear"].dead_fraction == pytest.approx(dead / 8)
    assert dead >= 3
    assert report.transition_density is not None


def test_a_capture_point_clashing_with_an_activation_name_is_refused(tmp_path: Path) -> None:
    x = torch.randn(8, 5)
    _, model = _model(tmp_path, x)
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy())
    config = AnalysisConfig.model_validate(
        {"device": "cpu", "capture_points": [{"tensor": "1", "breakpoints": [0.0], "name": "2:relu"}]}
    )

    with pytest.raises(AnalysisError) as caught:
        analyze(model, dataset, config, trusted_model=True)

    assert caught.value.code == "unknown_tensor" and "'2:relu'" in caught.value.message
