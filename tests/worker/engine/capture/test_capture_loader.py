"""Format detection, bad files, ``model_inputs`` and agreement between the two front ends."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from conftest import WIDTH, close, export_onnx, np_batch, save_script
from torch import nn

from worker.engine.capture.base import InputSpec
from worker.engine.capture.loader import detect_format, model_inputs, open_model
from worker.engine.errors import AnalysisError


class _Mixed(nn.Module):
    """Conv, then MLP layers with the activations whose ONNX forms are decomposed or renamed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(2 * 3 * 3, 8)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(8, 8)
        self.act2 = nn.SiLU()
        self.fc3 = nn.Linear(8, 8)
        self.act3 = nn.Mish()
        self.fc4 = nn.Linear(8, 8)
        self.act4 = nn.Hardswish()
        self.fc5 = nn.Linear(8, 8)
        self.act5 = nn.ReLU6()
        self.fc6 = nn.Linear(8, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.act0(self.bn(self.conv(image))).flatten(1)
        h = self.act2(self.fc2(self.act1(self.fc1(h))))
        h = self.act5(self.fc5(self.act4(self.fc4(self.act3(self.fc3(h))))))
        return self.fc6(torch.sigmoid(h))


@pytest.mark.parametrize("traced", [False, True], ids=["scripted", "traced"])
def test_onnx_and_torchscript_agree(traced: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Mixed().eval()
    images = torch.randn(6, 1, 5, 5) * 2
    onnx_path = export_onnx(net, [images[:2]], tmp_path / "net.onnx", opset=13, names=("image",))
    ts_path = save_script(net, [images[:2]] if traced else None, tmp_path / "net.pt")
    example = np_batch(image=images[:2])

    from_onnx = open_model(onnx_path, device="cpu", example=example)
    from_ts = open_model(ts_path, device="cpu", example=example)
    a, b = from_onnx.capture(np_batch(image=images)), from_ts.capture(np_batch(image=images))

    assert [(layer.op_type, layer.shape) for layer in from_onnx.layers] == [
        (layer.op_type, layer.shape) for layer in from_ts.layers
    ]
    assert [layer.op_type for layer in from_ts.layers] == [
        "relu", "gelu", "silu", "mish", "hardswish", "relu6", "sigmoid"
    ]  # fmt: skip
    assert from_ts.layers[0].shape == (2, 3, 3)
    for k, layer in enumerate(from_ts.layers):
        assert close(a.pre[k], b.pre[k]), layer.name
        assert close(a.post[k], b.post[k]), layer.name
    assert close(a.outputs, b.outputs)


def test_detects_format_from_content_not_extension(tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 3), nn.ReLU()).eval()
    onnx_path = export_onnx(net, [x[:2]], tmp_path / "model.pt", opset=13)
    ts_path = save_script(net, None, tmp_path / "model.onnx")

    assert detect_format(onnx_path) == "onnx" and detect_format(ts_path) == "torchscript"
    assert model_inputs(onnx_path) == [InputSpec("x", ("batch", WIDTH), "float32")]
    assert model_inputs(ts_path) == [InputSpec("input", (), "float32")]
    assert open_model(ts_path, device="cpu", example=np_batch(input=x[:2])).format == "torchscript"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "model_invalid"),
        (b"\x00\xff garbage that is no protobuf \xfe" * 10, "model_invalid"),
        (b"PK\x03\x04 truncated zip", "model_invalid"),
    ],
    ids=["empty", "garbage", "truncated-zip"],
)
def test_unreadable_files(content: bytes, code: str, tmp_path: Path, x: torch.Tensor) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert caught.value.code == code
    assert "model.bin" in caught.value.message


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_truncated_model_is_invalid(kind: str, tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 64), nn.ReLU(), nn.Linear(64, 2)).eval()
    if kind == "onnx":
        path = export_onnx(net, [x[:2]], tmp_path / "model", opset=13)
    else:
        path = save_script(net, None, tmp_path / "model")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(x=x[:2], input=x[:2]))

    assert caught.value.code == "model_invalid"


def test_checkpoint_zip_is_unsupported(tmp_path: Path, x: torch.Tensor) -> None:
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(WIDTH, 2).state_dict(), path)
    assert zipfile.is_zipfile(path)

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert caught.value.code == "model_unsupported" and "torch.jit" in caught.value.message


def test_missing_file(tmp_path: Path, x: torch.Tensor) -> None:
    with pytest.raises(AnalysisError) as caught:
        model_inputs(tmp_path / "nope.onnx")
    assert caught.value.code == "model_invalid"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_cuda_when_unavailable(kind: str, tmp_path: Path, x: torch.Tensor) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 3), nn.ReLU()).eval()
    path = (
        export_onnx(net, [x[:2]], tmp_path / "m", opset=13)
        if kind == "onnx"
        else save_script(net, None, tmp_path / "m")
    )

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cuda", example=np_batch(x=x[:2], input=x[:2]))
    assert caught.value.code == "device_unavailable"

    assert open_model(path, device="auto", example=np_batch(x=x[:2], input=x[:2])).device == torch.device(
        "cpu"
    )
    with pytest.raises(AnalysisError) as bad:
        open_model(path, device="tpu", example=np_batch(x=x[:2], input=x[:2]))
    assert bad.value.code == "device_unavailable" and "'tpu'" in bad.value.message
