"""Job directories of killed attempts: a directory whose attempt lives (a real process holding its
lock) survives the sweep; one whose attempt was ``kill -9``'d is removed, by the sweep and by a real
worker when it starts. The same worker then removes uploads and reports past their TTL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neuronscope.jobs import connect
from neuronscope.ownership import ArtifactOwnership
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from worker.stale_dirs import LOCK_NAME, job_workdir, remove_stale_workdirs

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from worker.stale_dirs import job_workdir
with job_workdir(sys.argv[1], tmp_dir=Path(sys.argv[2])) as work:
    (work / "model.onnx").write_bytes(b"staged input")
    print(work, flush=True)
    time.sleep(600)
"""


def _hold(job_id: str, tmp_dir: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real process in an attempt's ``job_workdir``; returns it and the directory it holds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, job_id, str(tmp_dir)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the holder did not start"
    return proc, Path(line)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_a_live_attempts_directory_survives_and_a_killed_ones_is_removed(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    live, live_dir = _hold(str(uuid.uuid4()), tmp_path)
    killed, killed_dir = _hold(str(uuid.uuid4()), tmp_path)
    holders += [live, killed]
    assert live_dir.name.startswith("neuronscope-") and (live_dir / LOCK_NAME).exists()
    for path in (live_dir, killed_dir):
        _age(path, 7 * 24 * 3600)  # age alone never decides for a directory with a lock file

    assert remove_stale_workdirs(tmp_path) == []
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed_dir.exists()  # nothing ran on the way out

    assert remove_stale_workdirs(tmp_path) == [killed_dir]
    assert not killed_dir.exists()
    assert (live_dir / "model.onnx").read_bytes() == b"staged input"
    assert live.poll() is None


def test_directories_without_a_lock_are_removed_only_when_old(tmp_path: Path) -> None:
    young = tmp_path / "neuronscope-aaaaaaaa-young"
    old = tmp_path / "neuronscope-bbbbbbbb-old"
    other = tmp_path / "someone-elses"
    for path in (young, old, other):
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "f").write_bytes(b"x")
    for path in (old, other):
        _age(path, 2 * 3600)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    (tmp_path / "neuronscope-link").symlink_to(outside)
    (tmp_path / "neuronscope-file").write_bytes(b"not a directory")

    assert remove_stale_workdirs(tmp_path, unlocked_max_age_s=3600) == [old]
    assert young.exists() and other.exists() and (outside / "keep").exists()
    assert (tmp_path / "neuronscope-link").is_symlink() and (tmp_path / "neuronscope-file").exists()


def test_job_workdir_removes_what_the_attempt_left_even_without_permissions(tmp_path: Path) -> None:
    with job_workdir(str(uuid.uuid4()), tmp_dir=tmp_path) as work:
        locked = work / "a" / "b"
        locked.mkdir(parents=True)
        (locked / "f").write_bytes(b"x")
        os.chmod(locked, 0)
        os.chmod(work / "a", 0o500)
    assert list(tmp_path.iterdir()) == []


def _store(storage: FileSystemStorage, data: bytes) -> str:
    info, _ = storage.commit(storage.stage(io.BytesIO(data), max_bytes=1 << 20), "dataset", "npy")
    return info.id


def test_a_real_worker_sweeps_at_start_and_on_its_timer(
    make_settings: Any,
    worker_factory: Any,
    tmp_path: Path,
    holders: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    live, live_dir = _hold(str(uuid.uuid4()), tmp)
    killed, killed_dir = _hold(str(uuid.uuid4()), tmp)
    holders += [live, killed]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()

    settings: Settings = make_settings(artifact_ttl_s=3600, report_ttl_s=3600, retention_sweep_s=1)
    storage = FileSystemStorage(settings.data_dir)
    client = connect(settings.require_redis_url())
    ownership = ArtifactOwnership(client, prefix=settings.key_prefix)
    expired, fresh = _store(storage, b"expired upload"), _store(storage, b"fresh upload")
    for artifact_id in (expired, fresh):
        ownership.grant("alice", "dataset", artifact_id)
    ownership.grant("bob", "dataset", expired)
    old_report, new_report = str(uuid.uuid4()), str(uuid.uuid4())
    storage.put_report(old_report, b"{}")
    storage.put_report(new_report, b"{}")
    _age(storage.root / "artifacts" / "dataset" / expired[:2] / f"{expired}.bin", 2 * 3600)
    _age(storage.root / "reports" / f"{old_report}.json", 2 * 3600)

    monkeypatch.setenv("TMPDIR", str(tmp))
    try:
        with worker_factory(settings, tmp_path / "worker.log") as worker:
            deadline = time.monotonic() + 30
            while storage.artifact("dataset", expired) is not None or storage.get_report(old_report):
                assert time.monotonic() < deadline, worker.log_text()[-3000:]
                time.sleep(0.2)
            assert not killed_dir.exists(), worker.log_text()[-3000:]
            assert live_dir.exists()
            assert storage.artifact("dataset", fresh) is not None and storage.get_report(new_report)
            assert not ownership.owns("alice", "dataset", expired)
            assert not ownership.owns("bob", "dataset", expired)
            assert ownership.owns("alice", "dataset", fresh)

            # On its timer too: a report that expires now is gone within a sweep or two.
            _age(storage.root / "reports" / f"{new_report}.json", 2 * 3600)
            deadline = time.monotonic() + 15
            while storage.get_report(new_report) is not None:
                assert time.monotonic() < deadline, worker.log_text()[-3000:]
                time.sleep(0.2)
    finally:
        client.close()
