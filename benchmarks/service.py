"""6. Service overhead: one analysis job end to end through the standalone service (upload, queue,
Celery worker, sandboxed job process, report) against ``analyze`` alone on the same inputs, and
status polling by 100 concurrent clients against one API process.

    .venv/bin/python -m benchmarks.service [--quick] [--out benchmarks/results_service.md]

Starts ``neuronscope serve`` (API + one worker + a private Redis) on a free loopback port with a
fresh data directory, no API keys and log level WARNING (no access log), and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.models import build
from benchmarks.report import Row, device_lines, fmt_seconds, load_average, render

SECTION = "6"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSizes:
    samples: int
    td_pairs: int
    td_points: int
    jobs: int
    clients: int
    requests_per_client: int


FULL = ServiceSizes(samples=1000, td_pairs=20, td_points=128, jobs=3, clients=100, requests_per_client=20)
QUICK = ServiceSizes(samples=256, td_pairs=4, td_points=32, jobs=2, clients=100, requests_per_client=5)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def standalone(data_dir: Path, log_path: Path) -> Iterator[str]:
    """``neuronscope serve`` in a child process until it answers ``/readyz``; yields its URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONSCOPE_") and k != "REDIS_URL"}
    env.update(NEURONSCOPE_DATA_DIR=str(data_dir), NEURONSCOPE_LOG_LEVEL="WARNING")
    command = [
        sys.executable, "-c", "from neuronscope.cli import main; raise SystemExit(main())",
        "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log_path)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"neuronscope serve exited ({proc.returncode}):\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/readyz").status_code == 200:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"neuronscope serve was not ready within {timeout_s:g} s:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-3000:]


def run_job(http: httpx.Client, model: Path, dataset: Path, config: str, poll_s: float = 0.05) -> float:
    """Seconds from the upload to the fetched report of one job, polling every ``poll_s``."""
    start = time.perf_counter()
    with model.open("rb") as m, dataset.open("rb") as d:
        accepted = http.post("/v1/analyze", files={"model": m, "dataset": d}, data={"config": config})
    accepted.raise_for_status()
    status_url = accepted.json()["status_url"]
    while True:
        status = http.get(status_url).json()
        if status["status"] == "succeeded":
            break
        if status["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {status['job_id']} ended {status['status']}: {status.get('error')}")
        time.sleep(poll_s)
    http.get(accepted.json()["report_url"]).raise_for_status()
    return time.perf_counter() - start


Poll = tuple[list[float], float, int]


async def _poll_httpx(url: str, path: str, clients: int, per_client: int) -> Poll:
    """``clients`` ``httpx.AsyncClient`` s (one connection each), each sending ``per_client`` GETs of
    ``path`` one after another. (One client with a 100-connection pool is slower still: its pool,
    not the server, becomes the bottleneck.)"""
    latencies: list[float] = []
    failures = 0
    https = [httpx.AsyncClient(base_url=url, timeout=60.0) for _ in range(clients)]
    try:
        # Open every connection before the clock starts: the figures are for polling, not connecting.
        await asyncio.gather(*(http.get(path) for http in https))

        async def client(http: httpx.AsyncClient) -> None:
            nonlocal failures
            for _ in range(per_client):
                start = time.perf_counter()
                response = await http.get(path)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(client(http) for http in https))
        return latencies, time.perf_counter() - start, failures
    finally:
        await asyncio.gather(*(http.aclose() for http in https))


async def _poll_raw(url: str, path: str, clients: int, per_client: int) -> Poll:
    """The same load from a minimal HTTP/1.1 keep-alive client on asyncio streams, light enough
    that the server, not the client, sets the pace on a machine they share."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    failures = 0

    async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
        )
        await reader.readexactly(length)
        return lines[0].split(" ")[1] == "200"

    connections = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(clients)))
    try:
        await asyncio.gather(*(get(r, w) for r, w in connections))

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal failures
            for _ in range(per_client):
                start = time.perf_counter()
                ok = await get(reader, writer)
                latencies.append(time.perf_counter() - start)
                failures += not ok

        start = time.perf_counter()
        await asyncio.gather(*(client(r, w) for r, w in connections))
        return latencies, time.perf_counter() - start, failures
    finally:
        for _, writer in connections:
            writer.close()


def run(sizes: ServiceSizes, scratch: Path) -> list[Row]:
    from neuronscope.contracts.config import AnalysisConfig
    from worker.engine import analyze

    network = build("fcnn", scratch, batch=256)
    x = network.samples(sizes.samples)
    y = np.random.default_rng(0).integers(0, 10, size=sizes.samples)
    dataset = scratch / "dataset.npz"
    np.savez(dataset, x=x, y=y)
    config_json = json.dumps(
        {
            "device": "cpu",
            "transition_density": {
                "pairs": {"count": sizes.td_pairs, "seed": 0},
                "points": sizes.td_points,
            },
        }
    )
    config = AnalysisConfig.model_validate_json(config_json)
    engine_times: list[float] = []
    job_times: list[float] = []
    data_dir = scratch / "service"
    with (
        standalone(data_dir, scratch / "serve.log") as url,
        httpx.Client(base_url=url, timeout=120.0) as http,
    ):
        run_job(http, network.onnx_path, dataset, config_json)  # warm-up: the worker's first job
        analyze(network.onnx_path, dataset, config)
        for _ in range(sizes.jobs):
            start = time.perf_counter()
            analyze(network.onnx_path, dataset, config)
            engine_times.append(time.perf_counter() - start)
            job_times.append(run_job(http, network.onnx_path, dataset, config_json))
        job_id = http.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]["job_id"]
        status_path = f"/v1/jobs/{job_id}"
        polls = {
            (client, path): asyncio.run(poll(url, path, sizes.clients, sizes.requests_per_client))
            for client, poll in (("raw", _poll_raw), ("httpx", _poll_httpx))
            for path in (status_path, "/healthz")
        }
    engine_s, job_s = statistics.median(engine_times), statistics.median(job_times)
    label = (
        f"{network.title}, {sizes.samples} samples, all-pairs PS, TD {sizes.td_pairs} pairs × "
        f"{sizes.td_points} points, ONNX"
    )
    return [
        Row(
            SECTION,
            f"end-to-end job through the API and one worker (upload → queue → sandboxed job → report, "
            f"polled every 50 ms) / `analyze` alone in one warm process — {label}",
            job_s / engine_s,
            f"job {fmt_seconds(job_s)} vs analyze {fmt_seconds(engine_s)} (+{fmt_seconds(job_s - engine_s)} "
            f"per job; medians of {sizes.jobs}, interleaved)",
        ),
        *(
            row
            for client, client_name in (
                ("raw", "a minimal asyncio HTTP/1.1 keep-alive client"),
                ("httpx", "httpx.AsyncClient, one per client"),
            )
            for row in (
                _poll_row(
                    f"status polling `GET /v1/jobs/{{id}}` (a finished job's record, from Redis), "
                    f"{sizes.clients} concurrent clients × {sizes.requests_per_client} requests with "
                    f"{client_name}, one API process",
                    polls[(client, status_path)],
                    polls[(client, "/healthz")],
                ),
                _poll_row(
                    f"`GET /healthz` (touches nothing: the HTTP stack and the clients alone), same "
                    f"clients ({client_name})",
                    polls[(client, "/healthz")],
                    None,
                ),
            )
        ),
    ]


def _poll_row(name: str, result: Poll, baseline: Poll | None) -> Row:
    latencies, wall, failures = result
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    rate = len(ordered) / wall
    ratio = None
    if baseline is not None:
        ratio = (len(baseline[0]) / baseline[1]) / rate
    return Row(
        SECTION,
        name,
        ratio,
        f"{rate:,.0f} requests/s; latency p50 {fmt_seconds(p50)}, p99 {fmt_seconds(p99)}; {failures} non-200",
        note="" if baseline is None else "ratio: /healthz requests/s ÷ these requests/s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.service", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller analysis and fewer requests")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("no redis-server on PATH: the standalone service needs it (or fakeredis)", file=sys.stderr)
    sizes = QUICK if args.quick else FULL
    started, load_before = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(prefix="neuronscope-service-bench-") as scratch:
        rows = run(sizes, Path(scratch))
    header = [
        *device_lines(),
        f"- **Run**: {'quick' if args.quick else 'full'}, {time.perf_counter() - started:.0f} s; "
        f"load average {load_before} at the start, {load_average()} at the end",
        "- **Setup**: `neuronscope serve` (uvicorn, one Celery worker, private redis-server) on loopback, "
        "no API keys, log level WARNING; the clients run on the same 2-core machine and compete with it "
        "for the CPU, so the lighter client's figures are the closer to the server's own.",
    ]
    text = render(rows, header, []).replace(
        "# neuronscope benchmark results", "# neuronscope service benchmark"
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
