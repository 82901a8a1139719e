"""A split analysis through real Celery workers: forced tiny blocks run as chords (prepare,
capture blocks, gather, PS row blocks and TD pair blocks in parallel, merge) and give the single
analysis's report, even when the worker process running a block dies."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from procs_lib import celery_worker

from neuronscope.contracts import AnalysisConfig, Report
from service.main import create_app

pytestmark = pytest.mark.integration

#: 96 samples: 4560 pairs in 2 PS row blocks; 6 TD pairs, 2 paths per batch, in blocks of 4 and 2.
CONFIG = {"transition_density": {"pairs": {"count": 6}, "points": 16}, "batch_size": 32, "device": "cpu"}
TINY_CHUNKS = {"NEURONSCOPE_CHUNK_TD_POINTS": "48", "NEURONSCOPE_CHUNK_PS_PAIRS": "2300"}


def comparable(report: Report) -> dict[str, Any]:
    data = json.loads(report.to_json())
    data.pop("timings")
    data["provenance"].pop("created_at")
    return dict(data)


#: Runs every analysis process, and kills the worker process running block 1 of ``{stage}`` the
#: first time.
KILL_ONCE = """#!/bin/sh
case "$*" in *"--stage {stage} "*"--chunk 1 "*)
    if [ ! -e {marker} ]; then touch {marker}; kill -9 "$PPID"; exit 1; fi;;
esac
exec "$@"
"""


def test_a_split_job_gives_the_single_analysis_report(
    make_settings: Any, tiny_model: Any, tmp_path: Path
) -> None:
    from worker.engine.plan import plan_chunks

    marker = tmp_path / "killed-once"
    sandbox = tmp_path / "sandbox.sh"
    sandbox.write_text(KILL_ONCE.format(marker=marker, stage="td"))
    sandbox.chmod(0o755)

    config = AnalysisConfig.model_validate(CONFIG)
    plan = plan_chunks(config, tiny_model.samples, td_points=48, ps_pairs=2300)
    assert plan.td_ranges == [(0, 4), (4, 6)] and len(plan.ps_rows) == 2

    settings = make_settings(job_threads=1)
    with (
        celery_worker(
            settings,
            tmp_path / "worker.log",
            concurrency=2,
            env=TINY_CHUNKS | {"NEURONSCOPE_SANDBOX_COMMAND": str(sandbox)},
        ) as worker,
        TestClient(create_app(settings)) as client,
    ):
        response = client.post(
            "/v1/analyze",
            files={
                "model": ("m.onnx", tiny_model.model.read_bytes()),
                "dataset": ("d.npz", tiny_model.dataset.read_bytes()),
            },
            data={"config": json.dumps(CONFIG)},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        stages = set()
        deadline = time.monotonic() + 90
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            stages.add(job["progress"]["stage"])
            assert time.monotonic() < deadline, worker.log_text()[-4000:]
            time.sleep(0.05)
        assert job["status"] == "succeeded", (job, worker.log_text()[-4000:])
        served = Report.model_validate_json(client.get(f"/v1/jobs/{job_id}/report").content)

    log = worker.log_text()
    assert marker.exists() and "WorkerLostError" in log  # TD chunk 1 lost its worker, ran again
    assert log.count("analysis.chunk[") >= 5 and "analysis.merge[" in log
    assert "chunks" in stages
    assert not (settings.data_dir / "work" / job_id).exists()  # scratch files cleaned up

    from worker.engine import analyze

    local = analyze(tiny_model.model, tiny_model.dataset, config)
    assert comparable(served) == comparable(local)


#: 96 samples captured in 3 blocks of 2 batches; then 2 PS row blocks and the 6 TD pairs in 1 block.
CAPTURE_CONFIG = {
    "transition_density": {"pairs": {"count": 6}, "points": 16},
    "batch_size": 16,
    "labels": "predicted",
    "device": "cpu",
}
CAPTURE_CHUNKS = {"NEURONSCOPE_CHUNK_CAPTURE_SAMPLES": "32", "NEURONSCOPE_CHUNK_PS_PAIRS": "2300"}


def test_a_capture_split_job_gives_the_single_analysis_report(
    make_settings: Any, tiny_model: Any, tmp_path: Path
) -> None:
    from worker.engine.plan import plan_chunks

    marker = tmp_path / "killed-once"
    sandbox = tmp_path / "sandbox.sh"
    sandbox.write_text(KILL_ONCE.format(marker=marker, stage="capture"))
    sandbox.chmod(0o755)

    config = AnalysisConfig.model_validate(CAPTURE_CONFIG)
    plan = plan_chunks(config, tiny_model.samples, td_points=0, ps_pairs=2300, capture_samples=32)
    assert plan.capture_ranges == [(0, 32), (32, 64), (64, 96)]
    assert plan.td_ranges == [(0, 6)] and len(plan.ps_rows) == 2

    settings = make_settings(job_threads=1)
    with (
        celery_worker(
            settings,
            tmp_path / "worker.log",
            concurrency=2,
            env=CAPTURE_CHUNKS
            | {"NEURONSCOPE_CHUNK_TD_POINTS": "0", "NEURONSCOPE_SANDBOX_COMMAND": str(sandbox)},
        ) as worker,
        TestClient(create_app(settings)) as client,
    ):
        response = client.post(
            "/v1/analyze",
            files={
                "model": ("m.onnx", tiny_model.model.read_bytes()),
                "dataset": ("d.npz", tiny_model.dataset.read_bytes()),
            },
            data={"config": json.dumps(CAPTURE_CONFIG)},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        stages = set()
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            stages.add(job["progress"]["stage"])
            assert time.monotonic() < deadline, worker.log_text()[-4000:]
            time.sleep(0.05)
        assert job["status"] == "succeeded", (job, worker.log_text()[-4000:])
        served = Report.model_validate_json(client.get(f"/v1/jobs/{job_id}/report").content)

    log = worker.log_text()
    assert marker.exists() and "WorkerLostError" in log  # capture block 1 lost its worker, ran again
    assert log.count("analysis.chunk[") >= 6 and log.count("analysis.merge[") >= 2  # two waves
    assert "chunks" in stages
    assert not (settings.data_dir / "work" / job_id).exists()  # scratch files cleaned up

    from worker.engine import analyze

    local = analyze(tiny_model.model, tiny_model.dataset, config)
    assert comparable(served) == comparable(local)
