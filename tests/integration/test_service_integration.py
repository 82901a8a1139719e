"""The whole path with real parts: the API (in-process), a real Redis and a real Celery worker
subprocess running analyses in child processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from procs_lib import runner_pids

from neuronscope.contracts import AnalysisConfig, Report
from neuronscope.settings import Settings
from service.main import create_app

pytestmark = pytest.mark.integration

SMALL = {"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"}
#: About a second of work each (with warm analysis processes a SMALL job may end before the next
#: one starts): long enough for two jobs to overlap.
BOTH = {"transition_density": {"pairs": {"count": 8}, "points": 50_000}, "device": "cpu"}
#: Enough transition-density work to keep a job busy for much longer than the test waits.
SLOW = {"transition_density": {"pairs": {"count": 2000}, "points": 100_000}, "device": "cpu"}


@dataclass
class Stack:
    settings: Settings
    client: TestClient
    worker: Any
    model: Path
    dataset: Path


@pytest.fixture(scope="module")
def stack(
    make_settings: Any, worker_factory: Any, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = make_settings(job_threads=1, job_memory_limit_mb=4096)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with worker_factory(settings, log, concurrency=2) as worker, TestClient(create_app(settings)) as client:
        yield Stack(settings, client, worker, tiny_model.model, tiny_model.dataset)


def submit(stack: Stack, config: dict[str, Any], **ids: str) -> str:
    files = (
        {}
        if ids
        else {"model": ("m.onnx", stack.model.read_bytes()), "dataset": ("d.npz", stack.dataset.read_bytes())}
    )
    response = stack.client.post("/v1/analyze", files=files, data={"config": json.dumps(config), **ids})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def wait_for(stack: Stack, job_id: str, statuses: set[str], timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = stack.client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return dict(job)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} still {job['status']} after {timeout_s} s:\n{stack.worker.log_text()[-4000:]}"
            )
        time.sleep(0.1)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what differs between two runs of the same analysis."""
    report = json.loads(json.dumps(report))
    report.pop("timings")
    report["provenance"].pop("created_at")
    return report


def test_ready_once_a_worker_answers(stack: Stack) -> None:
    response = stack.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["workers"] >= 1


def test_submit_poll_and_fetch_the_same_report_as_a_local_run(stack: Stack, tmp_path: Path) -> None:
    job_id = submit(stack, SMALL)
    job = wait_for(stack, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"stage": "done", "fraction": 1.0}
    assert job["started_at"] and job["finished_at"] and job["error"] is None

    response = stack.client.get(job["report_url"])
    assert response.status_code == 200
    served = Report.model_validate_json(response.content)

    from worker.engine import analyze

    local = analyze(stack.model, stack.dataset, AnalysisConfig.model_validate(SMALL))
    assert comparable(served.model_dump(mode="json", by_alias=True)) == comparable(
        local.model_dump(mode="json", by_alias=True)
    )

    html = stack.client.get(f"/v1/jobs/{job_id}/report.html")
    assert html.status_code in (200, 501)


def test_cancel_a_running_job(stack: Stack) -> None:
    job_id = submit(stack, SLOW)
    wait_for(stack, job_id, {"running"})
    deadline = time.monotonic() + 30
    while not runner_pids(job_id):
        assert time.monotonic() < deadline, "the analysis process never started"
        time.sleep(0.05)
    time.sleep(1.0)  # let it get into the analysis itself

    response = stack.client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    deadline = time.monotonic() + 5
    while runner_pids(job_id):
        assert time.monotonic() < deadline, "the analysis process outlived the cancel"
        time.sleep(0.05)
    time.sleep(1.0)
    job = stack.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["error"]["code"] == "cancelled"
    assert stack.client.get(f"/v1/jobs/{job_id}/report").json()["error"] == "report_not_ready"
    assert stack.client.delete(f"/v1/jobs/{job_id}").status_code == 409


def test_two_jobs_at_once(stack: Stack) -> None:
    model_id = stack.client.post("/v1/models", files={"file": ("m.onnx", stack.model.read_bytes())}).json()[
        "id"
    ]
    dataset_id = stack.client.post(
        "/v1/datasets", files={"file": ("d.npz", stack.dataset.read_bytes())}
    ).json()["id"]
    jobs = [submit(stack, BOTH | {"seed": seed}, model_id=model_id, dataset_id=dataset_id) for seed in (1, 2)]
    done = [wait_for(stack, job_id, {"succeeded", "failed"}) for job_id in jobs]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], done
    # Both ran at the same time on the worker's two processes.
    assert max(j["started_at"] for j in done) < min(j["finished_at"] for j in done)
    reports = [Report.model_validate_json(stack.client.get(j["report_url"]).content) for j in done]
    assert [r.provenance.seed for r in reports] == [1, 2]
    listed = [j["job_id"] for j in stack.client.get("/v1/jobs", params={"limit": 2}).json()["jobs"]]
    assert listed == jobs[::-1]


def test_a_tenants_job_limit_frees_up_when_the_worker_finishes(stack: Stack) -> None:
    """The per-tenant count is kept by neuronscope.jobs, so the real worker's updates free places."""
    key = "integration-key-0123456789"
    settings = stack.settings.model_copy(update={"api_keys": {key: "acme"}, "max_active_jobs_per_tenant": 1})
    files = {"model": ("m.onnx", stack.model.read_bytes()), "dataset": ("d.npz", stack.dataset.read_bytes())}
    data = {"config": json.dumps(SMALL)}
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        first = client.post("/v1/analyze", files=files, data=data, headers=headers)
        assert first.status_code == 202, first.text
        refused = client.post("/v1/analyze", files=files, data=data, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_jobs", refused.text
        assert int(refused.headers["Retry-After"]) > 0
        job_id = first.json()["job_id"]
        deadline = time.monotonic() + 90
        while client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, stack.worker.log_text()[-4000:]
            time.sleep(0.1)
        assert client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "succeeded"
        again = client.post("/v1/analyze", files=files, data=data, headers=headers)
        assert again.status_code == 202, again.text
        # The tenant's jobs are its own: the default tenant's client does not see them.
        assert stack.client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert client.delete(f"/v1/jobs/{again.json()['job_id']}", headers=headers).status_code in (200, 409)


def test_readyz_reports_the_workers_confinement(stack: Stack) -> None:
    """The real worker reports its host's confinement; a host whose workers cannot confine their
    analysis processes makes /readyz say so, whatever the API's own host has."""
    from neuronscope.confinement_reports import HostConfinement, publish, reported
    from neuronscope.jobs import connect

    client = connect(stack.settings.require_redis_url())
    deadline = time.monotonic() + 60
    while not (hosts := reported(client, stack.settings.key_prefix)):
        assert time.monotonic() < deadline, "the worker never reported its confinement"
        time.sleep(0.2)
    assert all(host.active and host.mechanism.startswith("landlock") for host in hosts), hosts
    ready = stack.client.get("/readyz").json()
    assert ready["confined"] is True and ready["confinement"].startswith("landlock")

    publish(client, stack.settings.key_prefix, HostConfinement("gpu-host-7", False, "none", "no Landlock"))
    try:
        ready = stack.client.get("/readyz").json()
        assert ready["confined"] is False and ready["confinement"] == "none"
    finally:
        client.delete(f"{stack.settings.key_prefix}:confinement:gpu-host-7")
    assert stack.client.get("/readyz").json()["confined"] is True
