"""``service.standalone.serve`` as ``neuronscope serve`` runs it: a real uvicorn, a private
redis-server and a Celery worker subprocess, stopped cleanly by SIGTERM; state survives a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def serving(
    data_dir: Path, port: int, env_extra: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``serve()`` in a subprocess (``prefix``: a command it runs under), killed on exit."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NEURONSCOPE_")}
    env |= {"NEURONSCOPE_JOB_THREADS": "1", "PYTHONPATH": str(ROOT)} | (env_extra or {})
    code = (
        "import logging, sys\nfrom pathlib import Path\nfrom service.standalone import serve\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"serve('127.0.0.1', {port}, Path({str(data_dir)!r}), workers=1)\n"
    )
    log = open(data_dir.parent / f"serve-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(
    base: str, proc: subprocess.Popen[bytes], path: str = "/readyz", timeout_s: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, "serve() exited"
        try:
            if httpx.get(base + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{path} never answered 200"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 40.0) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout_s) == 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_standalone_runs_a_job_stops_cleanly_and_keeps_state(tmp_path: Path, tiny_model: Any) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(data_dir, port) as proc:
        wait_ready(base, proc)
        helpers = descendants(proc.pid)
        assert any("redis-server" in cmdline(p) for p in helpers)
        assert any("celery" in cmdline(p) for p in helpers)

        config = {"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"}
        response = httpx.post(
            base + "/v1/analyze",
            files={
                "model": ("m.onnx", tiny_model.model.read_bytes()),
                "dataset": ("d.npz", tiny_model.dataset.read_bytes()),
            },
            data={"config": json.dumps(config)},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        job_url = base + response.headers["Location"]
        deadline = time.monotonic() + 90
        while (job := httpx.get(job_url, timeout=5).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        assert httpx.get(base + job["report_url"], timeout=5).status_code == 200

        stop(proc)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in helpers):
            assert time.monotonic() < deadline, [cmdline(p) for p in helpers if alive(p)]
            time.sleep(0.1)
    assert (data_dir / "redis" / "appendonlydir").is_dir()
    assert (data_dir / "logs" / "worker.log").exists()

    # Restarted on the same data directory: the job and its report are still there.
    with serving(data_dir, port) as proc:
        wait_ready(base, proc, path="/healthz")
        listed = httpx.get(base + "/v1/jobs", timeout=5).json()["jobs"]
        assert [(j["job_id"], j["status"]) for j in listed] == [(job["job_id"], "succeeded")]
        assert httpx.get(base + job["report_url"], timeout=5).status_code == 200
        stop(proc)


def test_with_redis_url_only_the_api_runs(tmp_path: Path, redis_server: Any) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": redis_server.url,
        "NEURONSCOPE_KEY_PREFIX": "standalone-api-only",
        "NEURONSCOPE_READYZ_TIMEOUT_S": "0.3",
    }
    with serving(tmp_path / "data", port, env) as proc:
        wait_ready(base, proc, path="/healthz")
        assert descendants(proc.pid) == set()
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
        stop(proc)
