"""Shared fixtures with real parts: a ``redis-server`` on a free loopback port for the session,
settings isolated per test (own key prefix, queue and data directory), a real Celery worker
subprocess, and a tiny ONNX model with its dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: One thread per math library in the test process and the processes it starts (unless already
#: set; this runs before anything imports numpy or torch). The suite's matrices are small and a
#: 2-core machine is shared with the workers, zygotes and servers the tests start: two spinning
#: OpenMP threads per process made tests/worker/engine take 105 s instead of 68 s. Analysis
#: processes are unaffected: their environment is an allow-list with the job's own thread count.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_redis(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@dataclass(frozen=True)
class RedisServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private ``redis-server`` for the test session (``REDIS_URL`` is ignored on purpose)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    data = tmp_path_factory.mktemp("redis")
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(data), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for_redis(url, proc)
        except Exception:
            proc.kill()
            proc.wait()
            continue
        break
    else:
        pytest.fail("redis-server did not start")
    yield RedisServer(url=url, port=port, proc=proc)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SettingsFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def make_settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> SettingsFactory:
    """``make_settings(**overrides)``: settings on the session's Redis, isolated from other tests."""
    from neuronscope.settings import Settings

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
            "data_dir": tmp_path_factory.mktemp("data"),
            "key_prefix": f"test-{tag}",
            "queue": f"q-{tag}",
            "job_time_limit_s": 120,
            "job_memory_limit_mb": 0,
            "readyz_timeout_s": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Any:
    return make_settings()


def settings_env(settings: Any) -> dict[str, str]:
    """The environment that hands ``settings`` to a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env | settings.to_env() | {"PYTHONPATH": pythonpath}


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def start_worker(
    settings: Any, log: Path, *, concurrency: int = 1, ready_timeout_s: float = 60.0
) -> Iterator[WorkerProcess]:
    """A real ``celery -A worker.celery_app worker`` subprocess, up once it answers a ping."""
    from service.core.queue import JobQueue

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "prefork",
             "--concurrency", str(concurrency), "--queues", settings.queue, "--loglevel", "INFO",
             "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(proc=proc, log=log)
    queue = JobQueue(settings)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while queue.ping_workers(0.5) == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not come up:\n{worker.log_text()[-3000:]}")
        yield worker
    finally:
        queue.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass(frozen=True)
class TinyModel:
    """A small ONNX ReLU MLP (16 → 32 → 32 → 4) and a matching ``.npz`` dataset (``x``, ``y``)."""

    model: Path
    dataset: Path
    samples: int


def build_tiny_model(out: Path, *, samples: int = 96, hidden: int = 32, seed: int = 0) -> TinyModel:
    import numpy as np
    import torch
    from torch import nn

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4)
    )
    net.eval()
    model_path = out / "tiny.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 16),),
        str(model_path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 16)).astype(np.float32)
    y = rng.integers(0, 4, size=samples).astype(np.int64)
    dataset_path = out / "tiny.npz"
    np.savez(dataset_path, x=x, y=y)
    return TinyModel(model=model_path, dataset=dataset_path, samples=samples)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., TinyModel]:
    """``tiny_model_factory(out_dir, samples=96, hidden=32, seed=0)``."""
    return build_tiny_model


@pytest.fixture(scope="session")
def worker_factory() -> Callable[..., contextlib.AbstractContextManager[WorkerProcess]]:
    """``with worker_factory(settings, log_path, concurrency=1) as worker: ...``."""
    return start_worker
