"""Post-space breakpoints from a layer's own parameters: Softplus β and threshold, HardSigmoid
alpha and beta (ONNX attributes), LeakyReLU's slope and ELU's alpha carried from the capture
front ends (ONNX attributes, TorchScript and .pt2 constant arguments). With non-default
parameters the post-space regions equal the pre-space ones, brute force on captured values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from neuronscope.contracts.config import AnalysisConfig
from worker.engine.analysis import plan_layers
from worker.engine.capture.base import CaptureModel, CaptureResult
from worker.engine.capture.loader import model_inputs, open_model
from worker.engine.errors import AnalysisError
from worker.engine.metrics.flat import flat_regions

INPUTS = torch.randn(400, 4, generator=torch.Generator().manual_seed(1)) * 2


def brute_regions(values: torch.Tensor, breakpoints: list[float]) -> torch.Tensor:
    """Region of each value: how many breakpoints lie strictly below it, compared exactly in float64."""
    bounds = torch.tensor(breakpoints, dtype=torch.float64)
    return (values.to(torch.float64).unsqueeze(-1) > bounds).sum(-1)


def _net(make: Callable[[], nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    first = nn.Linear(4, 16)
    with torch.no_grad():
        first.weight.mul_(3.0)
    return nn.Sequential(first, make(), nn.Linear(16, 3)).eval()


def _open(path: Path) -> tuple[CaptureModel, CaptureResult]:
    (spec,) = model_inputs(path)
    model = open_model(path, device="cpu", example={spec.name: INPUTS[:2].numpy()}, trusted=True)
    return model, model.capture({spec.name: INPUTS.numpy()})


def _save(net: nn.Module, fmt: str, path: Path) -> Path:
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(net), str(path))
    elif fmt == "pt2":
        torch.export.save(torch.export.export(net, (INPUTS[:2],)), str(path))
    else:
        torch.onnx.export(
            net, (INPUTS[:2],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
        )
    return path


def _hard_sigmoid_onnx(path: Path, alpha: float, beta: float) -> Path:
    """``x @ W -> HardSigmoid(alpha, beta) -> @ V`` built node by node."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array((rng.normal(size=(4, 16)) * 3).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(16, 3)).astype(np.float32), "v"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"),
        helper.make_node("HardSigmoid", ["h"], ["a"], name="act", alpha=alpha, beta=beta),
        helper.make_node("MatMul", ["a", "v"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _same_regions(model: CaptureModel, result: CaptureResult) -> tuple[list[float], list[float]]:
    (pre_plan,) = plan_layers(model, AnalysisConfig(space="pre"))
    (post_plan,) = plan_layers(model, AnalysisConfig(space="post"))
    pre_regions = brute_regions(result.pre[0], pre_plan.breakpoints)
    assert torch.equal(pre_regions, brute_regions(result.post[0], post_plan.breakpoints))
    assert set(torch.unique(pre_regions).tolist()) == set(range(len(pre_plan.breakpoints) + 1))
    for plan, values in ((pre_plan, result.pre[0]), (post_plan, result.post[0])):
        assert torch.equal(plan.coder(values).long(), brute_regions(values, plan.breakpoints))
    return pre_plan.breakpoints, post_plan.breakpoints


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_softplus_beta_moves_the_post_breakpoint(fmt: str, tmp_path: Path) -> None:
    model, result = _open(_save(_net(lambda: nn.Softplus(beta=2.0, threshold=5.0)), fmt, tmp_path / "m"))
    (layer,) = model.layers
    assert layer.op_type == "softplus" and dict(layer.params)["beta"] == 2.0
    if fmt != "onnx":  # the ONNX exporter folds the threshold into a Where on the scaled input
        assert dict(layer.params)["threshold"] == 5.0
    pre, post = _same_regions(model, result)
    assert pre == [0.0] and post == pytest.approx([np.log(2.0) / 2.0])


@pytest.mark.parametrize(("alpha", "beta"), [(0.25, 0.4), (0.2, 0.5)])
def test_onnx_hard_sigmoid_defaults_are_its_own_kinks(alpha: float, beta: float, tmp_path: Path) -> None:
    model, result = _open(_hard_sigmoid_onnx(tmp_path / "m.onnx", alpha, beta))
    (layer,) = model.layers
    # ONNX stores attributes as float32, and runs with those values
    assert layer.op_type == "hard_sigmoid" and dict(layer.params) == pytest.approx(
        {"alpha": alpha, "beta": beta}
    )
    pre, post = _same_regions(model, result)
    assert pre == pytest.approx([-beta / alpha, (1 - beta) / alpha])
    assert post[0] == pytest.approx(0.0) and post[1] < 1.0
    # the outer regions are exactly where it is constant, in pre space with its own kinks
    assert flat_regions("hard_sigmoid", pre, "pre", dict(layer.params)) == [0, 2]
    regions, values = brute_regions(result.pre[0], pre), result.post[0]
    assert bool((values[regions == 0] == 0).all()) and bool((values[regions == 2] == 1).all())
    assert bool(((values[regions == 1] > 0) & (values[regions == 1] < 1)).all())


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_leaky_relu_slope_and_elu_alpha_set_the_range(fmt: str, tmp_path: Path) -> None:
    flat, _ = _open(_save(_net(lambda: nn.LeakyReLU(0.0)), fmt, tmp_path / "flat"))
    leaky, leaky_result = _open(_save(_net(lambda: nn.LeakyReLU(0.2)), fmt, tmp_path / "leaky"))
    elu, _ = _open(_save(_net(lambda: nn.ELU(alpha=0.5)), fmt, tmp_path / "elu"))
    assert dict(flat.layers[0].params) == {"alpha": 0.0}
    assert dict(leaky.layers[0].params) == pytest.approx({"alpha": 0.2})
    assert dict(elu.layers[0].params) == {"alpha": 0.5}
    below = AnalysisConfig.model_validate({"space": "post", "breakpoints": {"leaky_relu": [-0.5, 0.0]}})
    with pytest.raises(AnalysisError, match=r"\[0, inf\)"):
        plan_layers(flat, below)  # slope 0: a ReLU, nothing below 0
    assert plan_layers(leaky, below)[0].breakpoints == [-0.5, 0.0]
    with pytest.raises(AnalysisError, match=r"\(-0.5, inf\)"):
        plan_layers(elu, AnalysisConfig.model_validate({"space": "post", "breakpoints": {"elu": [-0.6]}}))
    _same_regions(leaky, leaky_result)
