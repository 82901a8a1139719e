"""Capture points: a tensor named in the config (a module path or a value name) analysed as a
layer, with the same numbers in every format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import WIDTH, close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from neuronscope.contracts.config import CapturePoint
from worker.engine.capture.loader import open_model
from worker.engine.errors import AnalysisError

KINDS = ["scripted", "traced", "pt2", "onnx-dynamo"]


class _Mlp(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            x = module(x)
        return x


def _mlp() -> nn.Module:
    """Linear → BatchNorm → ReLU → Linear, BatchNorm with non-trivial running statistics."""
    torch.manual_seed(0)
    net = _Mlp(nn.Linear(WIDTH, WIDTH), nn.BatchNorm1d(WIDTH), nn.ReLU(), nn.Linear(WIDTH, 3))
    with torch.no_grad():
        bn = net[1]
        assert isinstance(bn, nn.BatchNorm1d)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _save(kind: str, net: nn.Module, x: torch.Tensor, path: Path) -> Path:
    if kind == "scripted":
        return save_script(net, None, path)
    if kind == "traced":
        return save_script(net, [x[:2]], path)
    if kind == "pt2":
        return save_exported(net, [x[:2]], path)
    # The exporter's optimizer folds an inference BatchNorm into the Gemm before it.
    return export_onnx(net, [x[:2]], path, dynamo=True, opset=18, optimize=False)


@pytest.mark.parametrize("kind", KINDS)
def test_a_linear_output_before_batch_norm_is_captured_as_eager_pytorch_computes_it(
    kind: str, x: torch.Tensor, tmp_path: Path
) -> None:
    net = _mlp()
    points = [
        CapturePoint(tensor="0", breakpoints=[-1.0, 0.0, 1.0], name="linear"),
        CapturePoint(tensor="1", breakpoints=[0.0]),
    ]
    path = _save(kind, net, x, tmp_path / "model")
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]), capture_points=points)

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type) for layer in model.layers] == [
        ("2:relu", "relu"),
        ("linear", "identity"),
        ("1", "identity"),
    ]
    assert model.layers[1].shape == (WIDTH,) and model.layers[1].default_breakpoints == (-1.0, 0.0, 1.0)
    with torch.no_grad():
        linear = net[0](x)
        normed = net[1](linear)
    assert close(result.pre[1], linear) and close(result.post[1], linear)
    assert close(result.pre[2], normed) and close(result.post[2], normed)
    assert close(result.pre[0], normed)
    assert close(result.outputs, net(x))


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_layers_asked_for_are_kept_capture_points_included(
    kind: str, x: torch.Tensor, tmp_path: Path
) -> None:
    net = _mlp()
    path = _save(kind, net, x, tmp_path / "model")
    point = CapturePoint(tensor="0", breakpoints=[0.0], name="linear")

    model = open_model(
        path, device="cpu", example=np_batch(x=x[:2]), layer_names=["linear"], capture_points=[point]
    )

    assert [layer.name for layer in model.layers] == ["linear"]
    with torch.no_grad():
        assert close(model.capture(np_batch(x=x)).pre[0], net[0](x))


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_tensor_is_refused_with_the_closest_names(
    kind: str, x: torch.Tensor, tmp_path: Path
) -> None:
    path = _save(kind, _mlp(), x, tmp_path / "model")

    with pytest.raises(AnalysisError) as caught:
        open_model(
            path,
            device="cpu",
            example=np_batch(x=x[:2]),
            capture_points=[CapturePoint(tensor="O", breakpoints=[0.0])],
        )

    assert caught.value.code == "unknown_tensor"
    assert "'O'" in caught.value.message and "'0'" in caught.value.message


def test_a_module_the_onnx_exporter_fused_away_is_refused_with_a_hint(
    x: torch.Tensor, tmp_path: Path
) -> None:
    path = export_onnx(_mlp(), [x[:2]], tmp_path / "model", dynamo=True, opset=18)

    with pytest.raises(AnalysisError) as caught:
        open_model(
            path,
            device="cpu",
            example=np_batch(x=x[:2]),
            capture_points=[CapturePoint(tensor="0", breakpoints=[0.0])],
        )

    assert caught.value.code == "unknown_tensor" and "optimize=False" in caught.value.message


def test_onnx_values_and_nodes_are_named_as_the_exporter_named_them(x: torch.Tensor, tmp_path: Path) -> None:
    net = _mlp()
    path = export_onnx(net, [x[:2]], tmp_path / "model", dynamo=False)
    import onnx

    gemm = next(node for node in onnx.load(str(path)).graph.node if node.op_type == "Gemm")
    points = [
        CapturePoint(tensor=gemm.output[0], breakpoints=[0.0], name="by_value"),
        CapturePoint(tensor=gemm.name, breakpoints=[0.0], name="by_node"),
    ]

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]), capture_points=points)
    result = model.capture(np_batch(x=x))

    with torch.no_grad():
        linear = net[0](x)
    assert close(result.pre[1], linear) and close(result.pre[2], linear)


def test_a_pt2_node_is_named_by_its_graph_name(x: torch.Tensor, tmp_path: Path) -> None:
    net = _mlp()
    path = save_exported(net, [x[:2]], tmp_path / "model")
    program = torch.export.load(str(path))
    linear = next(node.name for node in program.graph.nodes if node.target is torch.ops.aten.linear.default)

    model = open_model(
        path,
        device="cpu",
        example=np_batch(x=x[:2]),
        capture_points=[CapturePoint(tensor=linear, breakpoints=[0.0])],
    )

    with torch.no_grad():
        assert close(model.capture(np_batch(x=x)).pre[1], net[0](x))


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * torch.exp(self.scale))


def test_a_capture_point_on_a_tensor_without_the_batch_is_refused(tmp_path: Path, x: torch.Tensor) -> None:
    path = save_exported(_Scaled().eval(), [x[:2]], tmp_path / "model")

    with pytest.raises(AnalysisError) as caught:
        open_model(
            path,
            device="cpu",
            example=np_batch(x=x[:2]),
            capture_points=[CapturePoint(tensor="exp", breakpoints=[0.0])],
        )

    assert caught.value.code == "unknown_tensor" and "batch as its first dimension" in caught.value.message
