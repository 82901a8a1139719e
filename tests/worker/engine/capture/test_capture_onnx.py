"""The ONNX front end on real ``torch.onnx.export`` output, checked against hooks on the torch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import WIDTH, activation_net, close, export_onnx, np_batch, reference
from torch import nn

from worker.engine.capture.loader import open_model
from worker.engine.capture.onnx_model import OnnxCaptureModel
from worker.engine.errors import AnalysisError


def _op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize(
    ("opset", "dynamo"),
    [(9, False), (11, False), (17, False), (None, True)],
    ids=["legacy-opset9", "legacy-opset11", "legacy-opset17", "dynamo"],
)
def test_every_activation_kind_matches_torch(
    opset: int | None, dynamo: bool, x: torch.Tensor, tmp_path: Path
) -> None:
    net, expected_ops = activation_net(opset or 0)
    path = export_onnx(net, [x[:3]], tmp_path / "net.onnx", opset=opset, dynamo=dynamo)
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    output, pre, post = reference(net, [x])

    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == expected_ops
    assert all(layer.shape == (WIDTH,) for layer in model.layers)
    for k, layer in enumerate(model.layers):
        assert result.pre[k].dtype == torch.float32 and result.pre[k].shape == (7, WIDTH)
        assert close(result.pre[k], pre[k]), f"pre of {layer.name} ({layer.op_type})"
        assert close(result.post[k], post[k]), f"post of {layer.name} ({layer.op_type})"
    assert close(result.outputs, output)
    clip = next(layer for layer in model.layers if layer.op_type == "clip")
    assert clip.default_breakpoints == (-2.0, 3.0)
    assert [layer.default_breakpoints for layer in model.layers if layer.op_type != "clip"] == [None] * (
        len(expected_ops) - 1
    )


def test_decomposed_gelu_and_silu_are_one_layer_each(tmp_path: Path, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH), nn.SiLU()).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=17)
    assert "Erf" in _op_types(path) and "Gelu" not in _op_types(path) and "Sigmoid" in _op_types(path)

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == ["gelu", "silu"]
    _, pre, post = reference(net, [x])
    assert all(close(a, b) for a, b in zip(result.pre + result.post, pre + post, strict=True))


def test_gelu_op_of_opset_20(tmp_path: Path, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU(approximate="tanh"), nn.Linear(WIDTH, 2)).eval()
    path = export_onnx(net, [x[:3]], tmp_path / "net.onnx", opset=20, dynamo=True)
    assert "Gelu" in _op_types(path)

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert [layer.op_type for layer in model.layers] == ["gelu"]
    _, pre, post = reference(net, [x])
    result = model.capture(np_batch(x=x))
    assert close(result.pre[0], pre[0]) and close(result.post[0], post[0])


@pytest.mark.parametrize("fixed", [1, 3])
def test_fixed_batch_export_runs_in_chunks(fixed: int, tmp_path: Path, x: torch.Tensor) -> None:
    net, _ = activation_net(9)
    path = export_onnx(net, [x[:fixed]], tmp_path / "net.onnx", opset=9, dynamic_batch=False)
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    assert model.inputs[0].shape == (fixed, WIDTH)
    output, pre, _ = reference(net, [x])

    result = model.capture(np_batch(x=x))

    assert result.outputs.shape == (7, 3) and close(result.outputs, output)
    assert all(close(a, b) for a, b in zip(result.pre, pre, strict=True))
    assert close(model.infer(np_batch(x=x)), output)


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 3, stride=2)
        self.act2 = nn.Hardswish()
        self.head = nn.Linear(3 * 2 * 2, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.conv2(self.act(self.bn(self.conv(image))))).flatten(1))


def _conv_net() -> _ConvNet:
    torch.manual_seed(0)
    net = _ConvNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_conv_net_with_folded_batchnorm(dynamo: bool, tmp_path: Path) -> None:
    net = _conv_net()
    images = torch.randn(5, 2, 5, 5)
    path = export_onnx(
        net,
        [images[:2]],
        tmp_path / "conv.onnx",
        opset=None if dynamo else 13,
        dynamo=dynamo,
        names=("image",),
    )
    if not dynamo:
        assert "BatchNormalization" not in _op_types(path)

    model = open_model(path, device="cpu", example=np_batch(image=images[:2]))
    result = model.capture(np_batch(image=images))

    assert [(layer.op_type, layer.shape, layer.neurons) for layer in model.layers] == [
        ("relu", (4, 5, 5), 100),
        ("hardswish", (3, 2, 2), 12),
    ]
    _, pre, post = reference(net, [images], [net.act, net.act2])
    assert result.pre[0].shape == (5, 100)
    assert all(close(a, b) for a, b in zip(result.pre + result.post, pre + post, strict=True))


def test_batchnorm_folded_into_gemm(tmp_path: Path, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    linear, norm = nn.Linear(WIDTH, 5), nn.BatchNorm1d(5)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    unfolded = nn.Sequential(linear, norm, nn.ReLU(), nn.Linear(5, 2)).eval()
    folded = nn.Sequential(
        torch.nn.utils.fusion.fuse_linear_bn_eval(linear, norm), nn.ReLU(), unfolded[3]
    ).eval()
    path = export_onnx(folded, [x[:2]], tmp_path / "folded.onnx", opset=13)
    assert _op_types(path) == ["Gemm", "Relu", "Gemm"]

    result = open_model(path, device="cpu", example=np_batch(x=x[:2])).capture(np_batch(x=x))

    _, pre, post = reference(unfolded, [x])
    assert close(result.pre[0], pre[0]) and close(result.post[0], post[0])


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(3, 5)
        self.act = nn.Tanh()
        self.act2 = nn.ReLU()

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.act2(self.act(self.a(left)) - self.b(right))


def test_multi_input_model_takes_inputs_by_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _TwoInputs().eval()
    left, right = torch.randn(6, 4), torch.randn(6, 3)
    path = export_onnx(net, [left[:2], right[:2]], tmp_path / "two.onnx", names=("left", "right"), opset=13)
    model = open_model(path, device="cpu", example={"right": right[:2].numpy(), "left": left[:2].numpy()})
    assert [spec.name for spec in model.inputs] == ["left", "right"]

    result = model.capture({"right": right, "left": left, "label": torch.zeros(6)})

    output, pre, post = reference(net, [left, right])
    assert [layer.op_type for layer in model.layers] == ["tanh", "relu"]
    assert close(result.outputs, output)
    assert all(close(a, b) for a, b in zip(result.pre + result.post, pre + post, strict=True))


def test_activation_on_a_graph_input_takes_pre_from_the_feed(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Sigmoid(), nn.Linear(WIDTH, 2)).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)

    result = open_model(path, device="cpu", example=np_batch(x=x[:2])).capture(np_batch(x=x))

    assert close(result.pre[0], x) and close(result.post[0], torch.sigmoid(x))


def test_layer_selection_and_stable_names(tmp_path: Path, x: torch.Tensor) -> None:
    net, _ = activation_net(13)
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)
    everything = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    names = [layer.name for layer in everything.layers]
    assert len(set(names)) == len(names)
    assert names == [layer.name for layer in open_model(path, device="cpu", example=np_batch(x=x[:1])).layers]

    chosen = [names[3], names[9]]
    model = open_model(path, device="cpu", layer_names=chosen, example=np_batch(x=x[:2]))
    result, full = model.capture(np_batch(x=x)), everything.capture(np_batch(x=x))

    assert [layer.name for layer in model.layers] == chosen
    assert len(result.pre) == 2
    assert close(result.pre[0], full.pre[3]) and close(result.post[1], full.post[9])
    assert isinstance(model, OnnxCaptureModel) and len(model._output_names) == 5


def test_unknown_layer_lists_the_available_names(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.ReLU()).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", layer_names=["nope"], example=np_batch(x=x[:2]))

    assert caught.value.code == "unknown_layer"
    assert "'nope'" in caught.value.message and "/1/Relu" in caught.value.message


def test_model_without_activations(tmp_path: Path, x: torch.Tensor) -> None:
    path = export_onnx(
        nn.Sequential(nn.Linear(WIDTH, 4), nn.Linear(4, 2)).eval(), [x[:2]], tmp_path / "lin.onnx"
    )

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert caught.value.code == "no_activation_layers"


def test_wrong_input_shape_names_input_and_shapes(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.ReLU()).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example={"x": np.zeros((2, WIDTH + 1), np.float32)})
    assert caught.value.code == "dataset_shape_mismatch"
    assert "'x'" in caught.value.message and f"[N, {WIDTH}]" in caught.value.message
    assert f"[2, {WIDTH + 1}]" in caught.value.message

    with pytest.raises(AnalysisError) as missing:
        open_model(path, device="cpu", example={"features": x[:2].numpy()})
    assert missing.value.code == "dataset_shape_mismatch" and "'x'" in missing.value.message


def test_later_batch_with_another_shape_is_refused(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
    path = export_onnx(net, [torch.randn(2, 1, 6, 6)], tmp_path / "net.onnx", opset=13)
    onnx_model = onnx.load(str(path))
    for dim in onnx_model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    onnx.save(onnx_model, str(path))
    model = open_model(path, device="cpu", example={"x": np.zeros((2, 1, 6, 6), np.float32)})

    with pytest.raises(AnalysisError) as caught:
        model.capture({"x": np.zeros((3, 1, 8, 8), np.float32)})

    assert caught.value.code == "dataset_shape_mismatch" and "[N, 1, 6, 6]" in caught.value.message


def test_inputs_are_cast_to_the_declared_dtype(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.ELU()).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)
    model = open_model(path, device="cpu", example={"x": x[:2].double().numpy()})

    result = model.capture({"x": x.double().numpy()})

    _, pre, _ = reference(net, [x])
    assert close(result.pre[0], pre[0])
    assert model.runtime.startswith("onnxruntime ") and model.runtime.endswith("CPUExecutionProvider")
    assert model.device == torch.device("cpu") and model.format == "onnx"


def test_nameless_nodes_are_named_after_their_outputs(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.ReLU(), nn.Linear(4, 4), nn.SiLU()).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)
    graph = onnx.load(str(path))
    for node in graph.graph.node:
        node.name = ""
    onnx.save(graph, str(path))

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    relu, mul = (n for n in graph.graph.node if n.op_type in ("Relu", "Mul"))
    assert [layer.name for layer in model.layers] == [relu.output[0], mul.output[0]]


def test_weights_stored_as_external_data(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.LeakyReLU(0.2)).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "inline.onnx", opset=13)
    external = tmp_path / "external" / "model.onnx"
    external.parent.mkdir()
    onnx.save(
        onnx.load(str(path)), str(external), save_as_external_data=True, size_threshold=0, location="w.bin"
    )

    with pytest.raises(AnalysisError) as refused:
        open_model(external, device="cpu", example=np_batch(x=x[:2]))
    assert refused.value.code == "model_external_data"

    model = open_model(external, device="cpu", example=np_batch(x=x[:2]), trusted=True)

    _, pre, post = reference(net, [x])
    result = model.capture(np_batch(x=x))
    assert close(result.pre[0], pre[0]) and close(result.post[0], post[0])
    assert close(model.infer(np_batch(x=x)), post[0])
