"""``neuronscope serve`` (``service.standalone.serve``) restarts its Celery worker after a
``kill -9``: a job submitted afterwards runs to success instead of queueing forever."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_standalone import alive, cmdline, free_port, serving, stop, wait_ready

pytestmark = pytest.mark.integration


def celery_leader(serve_pid: int) -> int | None:
    """The worker's main process: the Celery child of the serve process (a new session leader)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == serve_pid and stat[0] != "Z" and "celery" in cmdline(int(entry)):
            return int(entry)
    return None


def run_job(base: str, tiny_model: Any) -> dict[str, Any]:
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
    deadline = time.monotonic() + 120
    while (job := httpx.get(job_url, timeout=5).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return dict(job)


def test_a_killed_worker_is_restarted_and_the_next_job_succeeds(tmp_path: Path, tiny_model: Any) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(data_dir, port) as proc:
        wait_ready(base, proc)
        first = celery_leader(proc.pid)
        assert first is not None

        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (second := celery_leader(proc.pid)) in (None, first):
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.2)
        assert not alive(first)

        job = run_job(base, tiny_model)
        assert job["status"] == "succeeded", job
        assert celery_leader(proc.pid) == second
        stop(proc)
    log = (tmp_path / f"serve-{port}.log").read_text(errors="replace")
    assert "worker exited unexpectedly with status -9" in log and "restarting it in" in log
    assert "worker restarted (pid" in log
