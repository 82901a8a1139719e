"""The shared-directory storage: content addressing, write-once reports, staging hygiene."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest

from neuronscope.storage import FileSystemStorage, UploadTooLarge, open_storage


def put(storage: FileSystemStorage, data: bytes, kind: str = "model", fmt: str = "onnx") -> tuple[str, bool]:
    staged = storage.stage(io.BytesIO(data), max_bytes=1 << 20)
    info, created = storage.commit(staged, kind, fmt)  # type: ignore[arg-type]
    return info.id, created


def test_same_bytes_same_id_stored_once(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
    data = b"model bytes" * 1000
    first = put(storage, data)
    assert first == (hashlib.sha256(data).hexdigest(), True)
    assert put(storage, data) == (first[0], False)
    info = storage.artifact("model", first[0])
    assert info is not None and info.size == len(data) and info.format == "onnx"
    assert storage.artifact("dataset", first[0]) is None
    assert len(list((tmp_path / "artifacts").rglob("*.bin"))) == 1
    assert list((tmp_path / "tmp").iterdir()) == []
    dest = tmp_path / "copy.onnx"
    storage.fetch("model", first[0], dest)
    assert dest.read_bytes() == data


def test_concurrent_uploads_of_the_same_bytes(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
    data = b"x" * 100_000
    created: list[bool] = []
    threads = [threading.Thread(target=lambda: created.append(put(storage, data)[1])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert created.count(True) == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_upload_limit_leaves_nothing_behind(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
    with pytest.raises(UploadTooLarge):
        storage.stage(io.BytesIO(b"x" * 2000), max_bytes=1000)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_reports_are_written_once(tmp_path: Path) -> None:
    storage = open_storage("filesystem", tmp_path)
    job_id = "0b9d6c3e-8a1f-4c2e-9d7b-1a2b3c4d5e6f"
    assert storage.get_report(job_id) is None
    assert storage.put_report(job_id, b'{"a": 1}')
    assert not storage.put_report(job_id, b'{"a": 2}')
    assert storage.get_report(job_id) == b'{"a": 1}'
    assert storage.get_report("../../etc/passwd") is None


@pytest.mark.parametrize("bad", ["", "../x", "A" * 64, "g" * 64])
def test_malformed_ids_are_unknown(tmp_path: Path, bad: str) -> None:
    storage = FileSystemStorage(tmp_path)
    assert storage.artifact("model", bad) is None
    with pytest.raises(FileNotFoundError):
        storage.fetch("model", bad, tmp_path / "out")
