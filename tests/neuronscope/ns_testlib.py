"""Test helpers for the CLI, client, gate, compare and HTML tests (fixtures in ``conftest.py``).

``build_report``: plausible reports built from the contract. The numbers are test data with the
shape of a real analysis (dying neurons piling up in the deep layers, same-label pairs more alike
than different-label pairs), not engine output. ``FakeApi``: the documented HTTP API in memory.
``LiveService``: where the real API app runs (the ``live_service`` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from neuronscope.contracts.config import AnalysisConfig, TransitionDensityConfig
from neuronscope.contracts.report import Report

ReportFactory = Callable[..., Report]


def _ps_d(values: np.ndarray, lambdas: Sequence[float]) -> dict[str, Any]:
    if values.size == 0:
        return {"lambda": list(lambdas), "value": [None] * len(lambdas)}
    return {"lambda": list(lambdas), "value": [float((values > lam).mean()) for lam in lambdas]}


def build_report(
    *,
    layer_names: Sequence[str] | None = None,
    neurons: int = 64,
    dying: Sequence[float] | None = None,
    with_td: bool = True,
    samples: int = 120,
    seed: int = 0,
    shift: float = 0.0,
    extra_ps_rows: int = 0,
) -> Report:
    """A plausible report. ``shift`` moves the dying shares and PS up (a "worse" model version)."""
    rng = np.random.default_rng(seed)
    names = list(layer_names) if layer_names is not None else [f"/layers.{2 * i + 1}/Relu" for i in range(6)]
    n_layers = len(names)
    if dying is None:
        dying = [min(0.95, 0.02 + 0.12 * max(0, i - n_layers // 2) + shift) for i in range(n_layers)]
    config = AnalysisConfig(transition_density=TransitionDensityConfig() if with_td else None)
    lambdas = config.lambdas
    same_ps = np.clip(rng.normal(0.82 + shift / 2, 0.05, 400), 0, 1)
    diff_ps = np.clip(rng.normal(0.62 + shift, 0.07, 400), 0, 1)
    rand_ps = np.concatenate([same_ps[:40], diff_ps[:360]])

    def kind(values: np.ndarray) -> dict[str, Any]:
        return {
            "pairs": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "ps_d": _ps_d(values, lambdas),
        }

    def summary(values: np.ndarray) -> dict[str, Any]:
        return {"pairs": int(values.size), "mean": float(values.mean()), "std": float(values.std())}

    layers = []
    layer_infos = []
    per_layer = []
    for i, name in enumerate(names):
        dy = float(dying[i])
        dead = dy / 3
        dying_count = round(dy * neurons)
        dead_count = min(dying_count, round(dead * neurons))
        layer_infos.append(
            {"name": name, "op_type": "relu", "neurons": neurons, "shape": [neurons], "breakpoints": [0.0]}
        )
        layers.append(
            {
                "name": name,
                "op_type": "relu",
                "neurons": neurons,
                "dead_fraction": dead_count / neurons,
                "dying_fraction": dying_count / neurons,
                "dead_count": dead_count,
                "dying_count": dying_count,
                "dead_neurons": list(range(dead_count)),
                "dying_neurons": list(range(dying_count)),
                "region_occupancy": [0.5 + dy / 2, 0.5 - dy / 2],
                "post_activation_mean": 0.4 / (1 + i) + 0.05,
                "post_activation_var": 0.3 / (1 + i) ** 1.5,
                "pre_activation_mean": -0.1 * i,
                "pre_activation_var": 1.0 / (1 + i),
            }
        )
        per_layer.append(
            {
                "name": name,
                "random": summary(rand_ps + 0.01 * i),
                "same_label": summary(np.clip(same_ps + 0.015 * i, 0, 1)),
                "different_label": summary(np.clip(diff_ps + 0.02 * i, 0, 1)),
            }
        )
    rows = []
    for k in range(samples):
        same = k % 3 == 0
        ps = float(same_ps[k % 400] if same else diff_ps[k % 400])
        dist = float(max(0.0, (1 - ps) * 12 + rng.normal(0, 0.6)))
        td = int(max(0, (1 - ps) * 40 + rng.normal(0, 2))) if with_td else None
        rows.append(
            {
                "i": k,
                "j": k + 1,
                "same_label": same,
                "ps": ps,
                "prediction_distance": dist,
                "td": td,
                "neuron_changes": None if td is None else td * 7,
            }
        )
    ps_rows = [{**row, "td": None, "neuron_changes": None} for row in rows] + [
        {
            "i": k,
            "j": k + 2,
            "same_label": k % 4 == 0,
            "ps": float(same_ps[k % 400] if k % 4 == 0 else diff_ps[k % 400]),
            "prediction_distance": float(rng.uniform(0, 10)),
            "td": None,
            "neuron_changes": None,
        }
        for k in range(extra_ps_rows)
    ]
    tds = np.array([r["td"] for r in rows if r["td"] is not None], dtype=float)
    transition_density = (
        {
            "pairs": len(rows),
            "points": 512,
            "mean": float(tds.mean()),
            "median": float(np.median(tds)),
            "std": float(tds.std()),
            "neuron_changes_mean": float(tds.mean() * 7),
            "per_pair_kind": {
                "same_label": {"pairs": 40, "mean": 5.0, "median": 4.0, "neuron_changes_mean": 35.0},
                "different_label": {"pairs": 80, "mean": 14.0, "median": 13.0, "neuron_changes_mean": 98.0},
            },
            "samples": rows,
        }
        if with_td
        else None
    )
    data = {
        "model": {
            "format": "onnx",
            "sha256": "ab" * 32,
            "inputs": [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}],
            "layers": layer_infos,
            "neurons": neurons * n_layers,
        },
        "dataset": {"samples": samples + 1, "labels_source": "dataset", "classes": 10, "accuracy": 0.95},
        "pattern_similarity": {
            "pair_selection": "all",
            "random": kind(rand_ps),
            "same_label": kind(same_ps),
            "different_label": kind(diff_ps),
            "per_layer": per_layer,
        },
        "transition_density": transition_density,
        "layers": layers,
        "prediction_distance": {
            "random": {"pairs": 400, "mean": 5.0, "std": 1.0},
            "same_label": {"pairs": 400, "mean": 2.0, "std": 0.5},
            "different_label": {"pairs": 400, "mean": 6.0, "std": 1.2},
            "spearman_vs_ps": -0.7,
            "spearman_vs_td": 0.6 if with_td else None,
            "correlation_pairs": len(ps_rows),
            "samples": ps_rows,
        },
        "provenance": {
            "neuronscope_version": "0.1.0",
            "python_version": "3.11.9",
            "torch_version": "2.13.0",
            "onnx_version": "1.23.2",
            "onnxruntime_version": "1.32.0",
            "device": "cpu",
            "runtime": "onnxruntime CPUExecutionProvider",
            "seed": 0,
            "created_at": "2025-01-01T00:00:00Z",
            "config": config.model_dump(mode="json"),
        },
        "timings": {
            "load_s": 0.1,
            "capture_s": 0.2,
            "pattern_similarity_s": 0.05,
            "transition_density_s": 1.0,
            "total_s": 1.4,
        },
    }
    return Report.model_validate(data)


# ---------------------------------------------------------------------------------------------
# A fake of the HTTP API (exactly the documented contract) for client and CLI tests without Redis


class FakeApi:
    """An ``httpx.MockTransport`` handler. ``script``: the statuses successive polls return."""

    def __init__(self, report: Report, *, api_key: str | None = None) -> None:
        self.report = report
        self.api_key = api_key
        self.script: list[str] = ["queued", "running", "running", "succeeded"]
        self.error: dict[str, str] | None = None
        self.analyze_error: tuple[int, dict[str, str] | str] | None = None
        self.requests: list[httpx.Request] = []
        self.polls = 0
        self.cancelled = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def _job(self, status: str) -> dict[str, Any]:
        fraction = {"queued": 0.0, "running": 0.5, "succeeded": 1.0}.get(status, 0.5)
        return {
            "job_id": "job1",
            "status": status,
            "progress": {
                "stage": "pattern_similarity" if status == "running" else status,
                "fraction": fraction,
            },
            "created_at": "2025-01-01T00:00:00Z",
            "started_at": None,
            "finished_at": None,
            "error": self.error if status in ("failed", "cancelled") else None,
            "model_id": "m" * 64,
            "dataset_id": "d" * 64,
            "report_url": "/v1/jobs/job1/report",
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return httpx.Response(401, json={"error": "unauthorized", "detail": "missing or wrong API key"})
        path, method = request.url.path, request.method
        if method == "GET" and path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if method == "POST" and path in ("/v1/models", "/v1/datasets"):
            kind = "model" if path.endswith("models") else "dataset"
            return httpx.Response(
                201,
                json={
                    "id": "a" * 64,
                    "kind": kind,
                    "format": "onnx" if kind == "model" else "npz",
                    "size": 3,
                },
            )
        if method == "POST" and path == "/v1/analyze":
            if self.analyze_error is not None:
                status, body = self.analyze_error
                return (
                    httpx.Response(status, json=body)
                    if isinstance(body, dict)
                    else httpx.Response(status, text=body)
                )
            return httpx.Response(
                202,
                json={
                    "job_id": "job1",
                    "status": "queued",
                    "status_url": "/v1/jobs/job1",
                    "report_url": "/v1/jobs/job1/report",
                    "html_report_url": "/v1/jobs/job1/report.html",
                },
            )
        if path == "/v1/jobs/job1" and method == "DELETE":
            self.cancelled = True
            return httpx.Response(200, json=self._job("cancelled"))
        if path == "/v1/jobs/job1" and method == "GET":
            job_status = "cancelled" if self.cancelled else self.script[min(self.polls, len(self.script) - 1)]
            self.polls += 1
            return httpx.Response(200, json=self._job(job_status))
        if path == "/v1/jobs/job1/report":
            if self.script[-1] != "succeeded" or self.polls < len(self.script):
                return httpx.Response(404, json={"error": "report_not_ready", "detail": "no report yet"})
            return httpx.Response(200, content=self.report.to_json().encode())
        if path == "/v1/jobs/job1/report.html":
            from neuronscope.report_html import render_html

            return httpx.Response(200, text=render_html(self.report), headers={"Content-Type": "text/html"})
        return httpx.Response(404, json={"error": "not_found", "detail": f"no route {method} {path}"})


# ---------------------------------------------------------------------------------------------
# The real API (service.main) on a real uvicorn server, on the session's Redis


@dataclass
class LiveService:
    url: str
    settings: Any


def play_worker(settings: Any, job_id: str, report: Report, *, fail: bool = False) -> None:
    """What a worker does to a job record: start, progress, store the report, finish."""
    from neuronscope.jobs import JobError, JobStore, connect
    from neuronscope.storage import open_storage

    redis_client = connect(settings.require_redis_url())
    try:
        store = JobStore(redis_client, prefix=settings.key_prefix)
        store.start(job_id, max_attempts=3)
        store.set_progress(job_id, "capture", 0.4)
        time.sleep(0.05)
        if fail:
            store.finish(
                job_id, "failed", JobError(code="dataset_shape_mismatch", message="x has 7 features")
            )
            return
        open_storage(settings.storage_backend, settings.data_dir).put_report(
            job_id, report.to_json().encode()
        )
        store.finish(job_id, "succeeded")
    finally:
        redis_client.close()
