"""Real processes for the fault tests: a private ``redis-server`` that can crash and come back with
its data, Celery workers with any pool and extra environment, and a look into ``/proc``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    """A ``redis-server`` with persistence (append-only file, fsync on every write) in ``data``."""

    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: _pings(client), 10, "redis-server to answer")
        finally:
            client.close()

    def crash(self) -> None:
        """``kill -9``: no shutdown save, only what the append-only file already holds survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextlib.contextmanager
def redis_process(data: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def worker_env(settings: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that hands ``settings`` (and ``extra`` worker settings) to a worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env | settings.to_env() | {"PYTHONPATH": pythonpath} | (extra or {})


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


def ping_workers(settings: Any, timeout_s: float = 0.5) -> int:
    from worker.celery_app import create_celery

    app = create_celery(settings)
    try:
        return len(app.control.ping(timeout=timeout_s) or [])
    finally:
        app.close()


@contextlib.contextmanager
def celery_worker(
    settings: Any,
    log: Path,
    *,
    pool: str = "prefork",
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> Iterator[Worker]:
    """``celery -A worker.celery_app worker`` in its own process group, stopped (group and all) on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", pool,
             "--concurrency", str(concurrency), "--queues", settings.queue, "--loglevel", "INFO",
             "--hostname", f"fault-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=worker_env(settings, env), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    worker = Worker(proc, log)
    try:
        if wait_ready:
            deadline = time.monotonic() + 60
            while ping_workers(settings) == 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Celery worker did not come up:\n{worker.log_text()[-3000:]}")
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # pool processes the main one left behind
            os.killpg(proc.pid, signal.SIGKILL)


def runner_pids(job_id: str) -> list[int]:
    """Live analysis processes of ``job_id`` (their inputs live in a per-job temp dir): started as
    ``python -m worker.child.runner`` naming it, or forked from the zygote with it as working directory."""
    pids = []
    tag = f"neuronscope-{job_id[:8]}-"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        started = "worker.child.runner" in cmdline and tag in cmdline
        forked = "worker.child.zygote" in cmdline and tag in cwd
        if (started or forked) and state != "Z":
            pids.append(int(entry))
    return pids
