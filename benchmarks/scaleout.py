"""Scale-out: one TD-heavy or capture-heavy analysis job on one single-threaded Celery worker, then on two.

    .venv/bin/python -m benchmarks.scaleout [--case td|capture] [--quick] [--repeats N] [--chunks K]
        [--td-pairs P] [--samples N]

Starts its own ``redis-server`` (no persistence) and ``celery -A worker.celery_app worker
--concurrency 1`` processes with ``NEURONSCOPE_JOB_THREADS=1`` (one thread per analysis), a fresh
data directory, and a ReLU MLP (64 → 3 × 256 → 10) with 256 samples. The job is split into
``--chunks`` TD chunks (``NEURONSCOPE_CHUNK_TD_POINTS``). ``--case capture`` times a job whose
cost is the capture instead: ``--samples`` samples (default 120,000; ``--quick`` 40,000), sampled
PS pairs, no TD, on a wider MLP (:func:`build_inputs`), split into ``--chunks`` capture blocks
(``NEURONSCOPE_CHUNK_CAPTURE_SAMPLES``), then gathered and merged. A job runs from queueing to
``succeeded`` with the workers already up. Three set-ups, each on its own queue with its workers
idle while another runs, interleaved ``--repeats`` times (medians):

- ``1 worker, not split``: the single-task analysis (``NEURONSCOPE_CHUNK_TD_POINTS=0``);
- ``1 worker, split``: the same chunks as below, one after the other;
- ``2 workers, split``: two worker processes, as two machines would run them.

Every run's report is checked to equal the first one's (timings and ``created_at`` aside).
``SCALEOUT_LOGLEVEL=INFO`` makes the workers log each task (logs in the temporary directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    td_pairs: int
    points: int
    samples: int = 256


FULL = Sizes(td_pairs=48, points=65_536)
QUICK = Sizes(td_pairs=16, points=32_768)
#: The capture-heavy case: samples through the model, nothing else of weight.
CAPTURE_FULL = 120_000
CAPTURE_QUICK = 40_000


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _group(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def redis_server(data: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(data), "--loglevel", "warning"]  # fmt: skip
    with _group(command, dict(os.environ), data / "redis.log"):
        import redis

        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url


def build_inputs(out: Path, sizes: Sizes, *, wide: bool = False) -> tuple[Path, Path]:
    """The MLP (64 → 3 × 256 → 10, ReLU) and ``sizes.samples`` samples; ``wide`` puts a linear
    2048-wide layer before each ReLU layer (64 → 2048 → 256 → 2048 → 256 → 10), so each sample
    costs 1.7 M multiply-adds for 512 captured neurons: the capture-heavy case."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module]
    if wide:
        layers = [nn.Linear(64, 2048), nn.Linear(2048, 256), nn.ReLU()]
        layers += [nn.Linear(256, 2048), nn.Linear(2048, 256), nn.ReLU()]
    else:
        layers = [nn.Linear(64, 256), nn.ReLU()]
        for _ in range(2):
            layers += [nn.Linear(256, 256), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(256, 10)).eval()
    model = out / "mlp.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 64),),
        str(model),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    rng = np.random.default_rng(0)
    dataset = out / "data.npz"
    x = rng.normal(size=(sizes.samples, 64)).astype(np.float32)
    np.savez(dataset, x=x, y=rng.integers(0, 10, size=sizes.samples))
    return model, dataset


@dataclass
class Deployment:
    settings: Any
    env: dict[str, str]
    logs: Path


def deployment(redis_url: str, data: Path, logs: Path) -> Deployment:
    from neuronscope.settings import Settings

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, data_dir=data, key_prefix=prefix, queue=prefix, job_threads=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    env |= {
        "REDIS_URL": redis_url,
        "NEURONSCOPE_DATA_DIR": str(data),
        "NEURONSCOPE_KEY_PREFIX": prefix,
        "NEURONSCOPE_QUEUE": prefix,
        "NEURONSCOPE_JOB_THREADS": "1",
        "NEURONSCOPE_JOB_MEMORY_LIMIT_MB": "0",
        "NEURONSCOPE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    return Deployment(settings, env, logs)


@contextlib.contextmanager
def workers(dep: Deployment, count: int, td_points: int, capture_samples: int = 0) -> Iterator[None]:
    from worker.celery_app import create_celery

    env = dep.env | {
        "NEURONSCOPE_CHUNK_TD_POINTS": str(td_points),
        "NEURONSCOPE_CHUNK_PS_PAIRS": "0",
        "NEURONSCOPE_CHUNK_CAPTURE_SAMPLES": str(capture_samples),
    }
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            name = f"bench-{uuid.uuid4().hex[:6]}"
            command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                       "--pool", "prefork", "--concurrency", "1", "--queues", dep.settings.queue,
                       "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                       "--loglevel", os.environ.get("SCALEOUT_LOGLEVEL", "WARNING")]  # fmt: skip
            stack.enter_context(_group(command, env, dep.logs / f"{name}.log"))
        app = create_celery(dep.settings)
        deadline = time.monotonic() + 120
        while len(app.control.ping(timeout=1.0) or []) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not come up; logs in {dep.logs}")
        app.close()
        yield


def run_job(dep: Deployment, model: Path, dataset: Path, config: dict[str, Any]) -> tuple[float, bytes]:
    """Queue one job (inputs stored, record created, task published) and time it to ``succeeded``."""
    from neuronscope.jobs import ArtifactRef, JobStore, connect
    from neuronscope.settings import ANALYSIS_TASK
    from neuronscope.storage import FileSystemStorage
    from worker.celery_app import create_celery

    storage = FileSystemStorage(dep.settings.data_dir)
    refs = []
    for kind, path, fmt in (("model", model, "onnx"), ("dataset", dataset, "npz")):
        with open(path, "rb") as f:
            info, _ = storage.commit(storage.stage(f, max_bytes=1 << 32), kind, fmt)  # type: ignore[arg-type]
        refs.append(ArtifactRef(id=info.id, format=info.format))
    jobs = JobStore(connect(dep.settings.require_redis_url()), prefix=dep.settings.key_prefix)
    record = jobs.create(model=refs[0], dataset=refs[1], config=json.dumps(config))
    app = create_celery(dep.settings)
    started = time.perf_counter()
    app.send_task(ANALYSIS_TASK, kwargs={"job_id": record.job_id}, task_id=record.job_id)
    while (status := jobs.status(record.job_id)) in ("queued", "running"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    app.close()
    if status != "succeeded":
        raise RuntimeError(f"job {record.job_id} {status}: {jobs.get(record.job_id)}")
    report = storage.get_report(record.job_id)
    assert report is not None
    return elapsed, report


def comparable(report: bytes) -> dict[str, Any]:
    data = json.loads(report)
    data.pop("timings")
    data["provenance"].pop("created_at")
    return dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a job of about 5 s instead of about 15 s")
    parser.add_argument("--repeats", type=int, default=3, help="runs per set-up (median reported)")
    parser.add_argument("--chunks", type=int, default=2, help="TD chunks the job is split into")
    parser.add_argument("--td-pairs", type=int, help="TD pairs of the job (default 48, --quick 16)")
    parser.add_argument("--case", choices=["td", "capture"], default="td", help="what makes the job heavy")
    parser.add_argument("--samples", type=int, help="samples of the capture case (default 120000)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.td_pairs:
        sizes = Sizes(td_pairs=args.td_pairs, points=sizes.points)
    if args.case == "capture":
        samples = args.samples or (CAPTURE_QUICK if args.quick else CAPTURE_FULL)
        sizes = Sizes(td_pairs=0, points=0, samples=samples)
        config: dict[str, Any] = {
            "pairs": {"count": 1000},
            "transition_density": None,
            "batch_size": 1024,
            "device": "cpu",
        }
        split = (0, -(-samples // args.chunks))
        what = f"capture-heavy job: {samples:,} samples, {args.chunks} capture blocks"
        network = "64-2048-256-2048-256-10"
    else:
        config = {
            "pairs": {"count": 1000},
            "transition_density": {"pairs": {"count": sizes.td_pairs}, "points": sizes.points},
            "device": "cpu",
        }
        split = (-(-sizes.td_pairs // args.chunks) * sizes.points, 0)
        what = f"TD-heavy job: {sizes.td_pairs} pairs x {sizes.points} points, {args.chunks} TD chunks"
        network = "64-256-256-256-10"
    setups = [
        ("1 worker, not split", 1, (0, 0)),
        ("1 worker, split", 1, split),
        ("2 workers, split", 2, split),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    reference: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="neuronscope-scaleout-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        (root / "redis").mkdir()
        model, dataset = build_inputs(root, sizes, wide=args.case == "capture")
        url = stack.enter_context(redis_server(root / "redis"))
        deployments = {}
        for name, count, (td_points, capture_samples) in setups:  # every set-up's workers up (idle) at once
            data = root / name.replace(" ", "-").replace(",", "")
            data.mkdir()
            deployments[name] = deployment(url, data, root)
            stack.enter_context(workers(deployments[name], count, td_points, capture_samples))
        for _ in range(args.repeats):  # set-ups interleaved, so drift in machine load hits all alike
            for name, _, _ in setups:
                elapsed, report = run_job(deployments[name], model, dataset, config)
                times[name].append(elapsed)
                print(f"{name}: {elapsed:.1f} s", file=sys.stderr)
                if reference is None:
                    reference = comparable(report)
                elif comparable(report) != reference:
                    raise SystemExit(f"{name}: the report differs from the first run's")
    medians = {name: statistics.median(values) for name, values in times.items()}
    two = medians["2 workers, split"]
    print(
        f"{what} on a {network} ReLU MLP, one thread per worker, {os.cpu_count()} cores, "
        f"median of {args.repeats}"
    )
    print("| set-up | job time | vs 2 workers |")
    print("| --- | --- | --- |")
    for name, median in medians.items():
        print(f"| {name} | {median:.1f} s | {median / two:.2f}x |")
    print("every report equal to the first run's (timings and created_at aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
