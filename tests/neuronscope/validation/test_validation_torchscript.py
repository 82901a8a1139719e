"""TorchScript archives checked from their zip structure alone: real saves pass, the rest does not."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from neuronscope.errors import InvalidInput
from neuronscope.validation import Limits, check_model_file, check_torchscript_archive, detect_model_format

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.script(net).save(str(path))
    return path


def code_of(path: Path, limits: Limits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        check_torchscript_archive(path, limits or Limits())
    return caught.value.code


def zip_of(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_real_scripted_model_passes(scripted: Path) -> None:
    summary = check_torchscript_archive(scripted)
    assert summary.prefix == "model" and summary.members > 3
    assert detect_model_format(scripted) == "torchscript"
    assert check_model_file(scripted) == summary


def test_random_zip_and_torch_save_checkpoint_fail(tmp_path: Path) -> None:
    assert (
        code_of(zip_of(tmp_path / "r.pt", {"readme.txt": b"hello", "data.bin": b"\0" * 10}))
        == "model_invalid"
    )
    checkpoint = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(3)}, str(checkpoint))  # data.pkl but no code: not TorchScript
    assert code_of(checkpoint) == "model_invalid"


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.95])
def test_truncated_archive_fails(scripted: Path, tmp_path: Path, keep: float) -> None:
    data = scripted.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    assert code_of(path) == "model_invalid"


def test_not_a_zip_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x80\x04not a zip at all")
    assert code_of(path) == "model_invalid"


@pytest.mark.parametrize("name", ["model/../../etc/cron.d/x", "/model/code/x.py", "model\\code\\x.py"])
def test_path_traversal_names_fail(tmp_path: Path, name: str) -> None:
    members = {"model/data.pkl": b"x", "model/constants.pkl": b"x", name: b"x"}
    assert code_of(zip_of(tmp_path / "t.pt", members)) == "model_invalid"


def test_declared_size_bomb(tmp_path: Path) -> None:
    members = {"model/data.pkl": b"\0" * 100, "model/constants.pkl": b"x", "model/code/m.py": b"pass"}
    path = zip_of(tmp_path / "bomb.pt", members, compression=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")  # the first entry: model/data.pkl
    struct.pack_into("<L", data, central + 24, 2**32 - 1)
    struct.pack_into("<L", data, 22, 2**32 - 1)
    path.write_bytes(bytes(data))
    assert code_of(path, Limits(max_model_uncompressed_bytes=2**31)) == "model_zip_bomb"


def test_compression_ratio_bomb(tmp_path: Path) -> None:
    members = {"model/data.pkl": b"x", "model/constants.pkl": b"x", "model/data/0": b"\0" * (4 * 2**20)}
    path = zip_of(tmp_path / "ratio.pt", members, compression=zipfile.ZIP_DEFLATED)
    assert code_of(path) == "model_zip_bomb"


def test_size_limits(scripted: Path) -> None:
    assert code_of(scripted, Limits(max_model_bytes=1000)) == "model_too_large"
    assert code_of(scripted, Limits(max_model_members=3)) == "model_zip_bomb"
