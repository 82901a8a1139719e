"""Breakpoints in post-activation space: default Γ mapped through the activation gives the same
regions as in pre space (brute force on captured values), out-of-range Γ is refused, and
HardSigmoid's default Γ is its kinks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from neuronscope.contracts.config import AnalysisConfig
from worker.engine.analysis import plan_layers
from worker.engine.capture.base import CaptureModel, CaptureResult
from worker.engine.capture.loader import model_inputs, open_model
from worker.engine.errors import AnalysisError
from worker.engine.metrics.flat import flat_regions

MONOTONE: list[tuple[str, Callable[[], nn.Module]]] = [
    ("sigmoid", nn.Sigmoid),
    ("tanh", nn.Tanh),
    ("relu", nn.ReLU),
    ("relu6", nn.ReLU6),
    ("hardtanh", nn.Hardtanh),
    ("clip", lambda: nn.Hardtanh(-2.0, 3.0)),
    ("softplus", nn.Softplus),
    ("hard_sigmoid", nn.Hardsigmoid),
    ("leaky_relu", lambda: nn.LeakyReLU(0.1)),
    ("elu", nn.ELU),
    ("selu", nn.SELU),
    # not monotone, but sign-preserving: {0} maps to {0} and the regions still agree
    ("gelu", nn.GELU),
    ("silu", nn.SiLU),
    ("mish", nn.Mish),
]


def _capture(make: Callable[[], nn.Module], tmp_path: Path) -> tuple[CaptureModel, CaptureResult]:
    """A small scripted net ``Linear -> act -> Linear`` and its capture of 300 inputs spread wide
    enough to reach every region (saturated ends included)."""
    torch.manual_seed(0)
    first = nn.Linear(4, 16)
    with torch.no_grad():
        first.weight.mul_(3.0)
    net = nn.Sequential(first, make(), nn.Linear(16, 3)).eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(1)) * 2
    (spec,) = model_inputs(path)
    model = open_model(path, device="cpu", example={spec.name: x[:2].numpy()})
    return model, model.capture({spec.name: x.numpy()})


def brute_regions(values: torch.Tensor, breakpoints: list[float]) -> torch.Tensor:
    """Region of each value: how many breakpoints lie strictly below it, compared exactly in float64."""
    bounds = torch.tensor(breakpoints, dtype=torch.float64)
    return (values.to(torch.float64).unsqueeze(-1) > bounds).sum(-1)


@pytest.mark.parametrize(
    ("op_type", "make"), MONOTONE, ids=[f"{op}-{i}" for i, (op, _) in enumerate(MONOTONE)]
)
def test_default_breakpoints_give_the_same_regions_in_both_spaces(
    op_type: str, make: Callable[[], nn.Module], tmp_path: Path
) -> None:
    model, result = _capture(make, tmp_path)
    assert [layer.op_type for layer in model.layers] == [op_type]
    (pre_plan,) = plan_layers(model, AnalysisConfig(space="pre"))
    (post_plan,) = plan_layers(model, AnalysisConfig(space="post"))
    pre, post = result.pre[0], result.post[0]

    pre_regions = brute_regions(pre, pre_plan.breakpoints)
    post_regions = brute_regions(post, post_plan.breakpoints)
    assert torch.equal(pre_regions, post_regions)
    # every region is reached, so the agreement is not that of one region everywhere
    assert set(torch.unique(pre_regions).tolist()) == set(range(len(pre_plan.breakpoints) + 1))
    # the engine's coder agrees with the brute force in both spaces
    assert torch.equal(pre_plan.coder(pre).long(), pre_regions)
    assert torch.equal(post_plan.coder(post).long(), post_regions)


def test_hardswish_post_regions_merge_only_the_dip_with_the_flat_part(tmp_path: Path) -> None:
    model, result = _capture(nn.Hardswish, tmp_path)
    (pre_plan,) = plan_layers(model, AnalysisConfig(space="pre"))
    (post_plan,) = plan_layers(model, AnalysisConfig(space="post"))
    assert pre_plan.breakpoints == [-3.0, 3.0] and post_plan.breakpoints == [0.0, 3.0]
    pre, post = result.pre[0], result.post[0]
    pre_regions, post_regions = brute_regions(pre, [-3.0, 0.0, 3.0]), brute_regions(post, [0.0, 3.0])
    # pre (-inf, -3] and (-3, 0] both land in post region 0; (0, 3] and (3, inf) keep their regions
    assert torch.equal(post_regions, (pre_regions - 1).clamp(min=0))
    assert bool(((pre > -3) & (pre <= 0)).any()) and bool((pre <= -3).any())


def test_hard_sigmoid_defaults_are_its_kinks(tmp_path: Path) -> None:
    model, result = _capture(nn.Hardsigmoid, tmp_path)
    (plan,) = plan_layers(model, AnalysisConfig())
    assert plan.breakpoints == [-3.0, 3.0]
    assert flat_regions("hard_sigmoid", plan.breakpoints) == [0, 2]
    # the outer regions are exactly where HardSigmoid is constant (0 and 1), the middle where it is not
    regions, post = brute_regions(result.pre[0], plan.breakpoints), result.post[0]
    assert bool((post[regions == 0] == 0).all()) and bool((post[regions == 2] == 1).all())
    assert bool(((post[regions == 1] > 0) & (post[regions == 1] < 1)).all())


@pytest.mark.parametrize(
    ("op_type", "points", "expected"),
    [
        ("sigmoid", [-0.5, 0.0, 0.5], "(0, 1)"),
        ("tanh", [0.0, 1.0], "(-1, 1)"),
        ("softplus", [0.0], "(0, inf)"),
        ("relu", [-1.0, 0.0], "[0, inf)"),
        ("relu6", [6.0], "[0, 6)"),
        ("hard_sigmoid", [-3.0, 3.0], "[0, 1)"),
    ],
)
def test_out_of_range_post_breakpoints_of_an_op_type_are_refused(
    op_type: str, points: list[float], expected: str
) -> None:
    with pytest.raises(ValidationError) as error:
        AnalysisConfig.model_validate({"space": "post", "breakpoints": {op_type: points}})
    message = str(error.value)
    assert expected in message and str(points) in message and op_type in message
    # the same values are fine in pre space
    AnalysisConfig.model_validate({"space": "pre", "breakpoints": {op_type: points}})


def test_in_range_post_breakpoints_are_accepted() -> None:
    config = AnalysisConfig.model_validate(
        {"space": "post", "breakpoints": {"sigmoid": [0.2, 0.5], "relu": [0.0], "tanh": [0.0]}}
    )
    assert config.breakpoints_for("any", "sigmoid") == [0.2, 0.5]


def test_out_of_range_post_breakpoints_of_a_layer_are_refused_once_the_op_is_known(tmp_path: Path) -> None:
    model, _ = _capture(nn.Sigmoid, tmp_path)
    (layer,) = model.layers
    config = AnalysisConfig.model_validate({"space": "post", "breakpoints": {layer.name: [-0.5, 0.5]}})
    with pytest.raises(AnalysisError) as error:
        plan_layers(model, config)
    assert error.value.code == "breakpoints_invalid"
    assert layer.name in error.value.message and "(0, 1)" in error.value.message
    assert "[-0.5, 0.5]" in error.value.message
    (plan,) = plan_layers(model, AnalysisConfig.model_validate({"breakpoints": {layer.name: [-0.5, 0.5]}}))
    assert plan.breakpoints == [-0.5, 0.5]


def test_a_clip_layer_is_checked_against_its_own_bounds(tmp_path: Path) -> None:
    model, _ = _capture(lambda: nn.Hardtanh(-2.0, 3.0), tmp_path)
    config = AnalysisConfig.model_validate({"space": "post", "breakpoints": {"clip": [0.0, 5.0]}})
    with pytest.raises(AnalysisError) as error:
        plan_layers(model, config)
    assert "[-2, 3)" in error.value.message and "[5.0]" in error.value.message
    (plan,) = plan_layers(
        model, AnalysisConfig.model_validate({"space": "post", "breakpoints": {"clip": [0.0]}})
    )
    assert plan.breakpoints == [0.0]
