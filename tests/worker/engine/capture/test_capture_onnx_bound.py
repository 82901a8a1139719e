"""The ONNX front end's device path (outputs bound with IOBinding, handed over through DLPack), which a
CUDA model takes: run here with the outputs bound to host memory, it returns exactly what the default
path returns, for every kind of slot (exposed value, value derived from the pre-activation, graph
input, fixed-batch model falling back to chunks)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import WIDTH, activation_net, export_onnx, np_batch
from torch import nn

from worker.engine.capture.onnx_model import OnnxCaptureModel, load_onnx


def _both(path: Path, example: dict[str, torch.Tensor]) -> tuple[OnnxCaptureModel, OnnxCaptureModel]:
    batch = np_batch(**example)
    host = load_onnx(path, device="cpu", layer_names=None, example=batch)
    bound = load_onnx(path, device="cpu", layer_names=None, example=batch, bind_outputs=True)
    return host, bound


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and a.shape == b.shape and torch.equal(a, b)


def test_bound_outputs_equal_the_host_path_bit_for_bit(tmp_path: Path, x: torch.Tensor) -> None:
    net, _ = activation_net()
    path = export_onnx(net, [x[:3]], tmp_path / "net.onnx", opset=17)
    host, bound = _both(path, {"x": x[:2]})

    expected, got = host.capture(np_batch(x=x)), bound.capture(np_batch(x=x))

    assert len(got.pre) == len(expected.pre) == len(host.layers) > 5
    assert _identical(got.outputs, expected.outputs)
    for k in range(len(host.layers)):
        assert _identical(got.pre[k], expected.pre[k]) and _identical(got.post[k], expected.post[k])
    assert got.pre[0].device.type == "cpu"


def test_a_graph_input_and_a_derived_post_on_the_bound_path(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Sigmoid(), nn.Linear(WIDTH, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    path = export_onnx(net, [x[:2]], tmp_path / "net.onnx", opset=13)
    host, bound = _both(path, {"x": x[:2]})

    expected, got = host.capture(np_batch(x=x)), bound.capture(np_batch(x=x))

    assert _identical(got.pre[0], x) and _identical(got.pre[0], expected.pre[0])
    assert _identical(got.post[1], torch.relu(got.pre[1])) and _identical(got.post[1], expected.post[1])


def test_a_fixed_batch_model_falls_back_to_the_chunked_host_path(tmp_path: Path, x: torch.Tensor) -> None:
    net, _ = activation_net()
    path = export_onnx(net, [x[:3]], tmp_path / "fixed.onnx", opset=17, dynamic_batch=False)
    host, bound = _both(path, {"x": x[:3]})

    expected, got = host.capture(np_batch(x=x)), bound.capture(np_batch(x=x))

    assert all(
        _identical(a, b) for a, b in zip(got.pre + got.post, expected.pre + expected.post, strict=True)
    )


def test_bound_values_outlive_later_runs(tmp_path: Path, x: torch.Tensor) -> None:
    """The tensors share the session's output memory; later runs must not overwrite or free it."""
    net, _ = activation_net()
    path = export_onnx(net, [x[:3]], tmp_path / "net.onnx", opset=17)
    host, bound = _both(path, {"x": x[:2]})
    first = bound.capture(np_batch(x=x))
    for scale in (2.0, -3.0, 5.0):
        bound.capture(np_batch(x=x * scale))

    expected = host.capture(np_batch(x=x))

    assert all(
        _identical(a, b) for a, b in zip(first.pre + first.post, expected.pre + expected.post, strict=True)
    )
