"""No accepted job is lost, with real processes: a worker killed with ``kill -9`` mid-job, Redis
crashing with jobs queued, a poison job that kills its worker every time, a model that segfaults.
Jobs go in through the API (in-process) and run on real Celery worker subprocesses."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from procs_lib import celery_worker, redis_process, runner_pids, wait_until

from neuronscope.contracts import Report
from service.main import create_app

pytestmark = pytest.mark.integration

SMALL = {"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"}
#: About three seconds of transition density on the tiny model, single-threaded.
BUSY = {"transition_density": {"pairs": {"count": 16}, "points": 50_000}, "device": "cpu"}
#: Redelivery after a worker died, and the lease of its job: short here (by default above the hard
#: time limit, and 60 s).
FAST_REDELIVERY = {"NEURONSCOPE_VISIBILITY_TIMEOUT_S": "5", "NEURONSCOPE_JOB_LEASE_S": "2"}


@pytest.fixture
def client_for() -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(settings: Any) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def submit(client: TestClient, model: Path, dataset: Path, config: dict[str, Any]) -> str:
    response = client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", model.read_bytes()), "dataset": ("d.npz", dataset.read_bytes())},
        data={"config": json.dumps(config)},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_finished(client: TestClient, job_id: str, timeout_s: float, log: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record = job(client, job_id)
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        if time.monotonic() > deadline:
            tail = log.log_text()[-4000:] if log is not None else ""
            raise AssertionError(f"job {job_id} still {record['status']} after {timeout_s} s\n{tail}")
        time.sleep(0.1)


def test_a_job_survives_kill_9_of_its_worker(
    make_settings: Any, client_for: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """The worker running a job dies with SIGKILL; its analysis process dies with it; a new worker
    gets the job after the visibility timeout and finishes it."""
    settings = make_settings(job_threads=1)
    client = client_for(settings)
    with celery_worker(settings, tmp_path / "a.log", pool="solo", env=FAST_REDELIVERY) as first:
        job_id = submit(client, tiny_model.model, tiny_model.dataset, BUSY)
        in_td = lambda: job(client, job_id)["progress"]["stage"] == "transition_density"  # noqa: E731
        wait_until(in_td, 60, "transition density to start")
        analysis = runner_pids(job_id)
        assert analysis, "no analysis process"
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        wait_until(lambda: not runner_pids(job_id), 5, "the analysis process to die with its worker")
    killed = job(client, job_id)
    assert killed["status"] == "running" and killed["attempts"] == 1

    with celery_worker(settings, tmp_path / "b.log", pool="prefork", env=FAST_REDELIVERY) as second:
        done = wait_finished(client, job_id, 60, second)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    report = client.get(f"/v1/jobs/{job_id}/report")
    assert report.status_code == 200
    assert Report.model_validate_json(report.content).transition_density is not None


def test_a_job_running_past_the_visibility_timeout_runs_once(
    make_settings: Any, client_for: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """Redis hands a job still running past its visibility timeout to a second pool process; that
    delivery finds the job's lease held, does not start it, and checks again until it is done."""
    settings = make_settings(job_threads=1)
    client = client_for(settings)
    long_job = {"transition_density": {"pairs": {"count": 64}, "points": 100_000}, "device": "cpu"}
    # One task of 10-25 s against a redelivery after 2-3 s: the second delivery comes while the
    # first attempt runs on a quiet machine as on a loaded one.
    unsplit = {
        "NEURONSCOPE_VISIBILITY_TIMEOUT_S": "2",
        "NEURONSCOPE_JOB_LEASE_S": "2",
        "NEURONSCOPE_CHUNK_TD_POINTS": "0",
    }
    with celery_worker(settings, tmp_path / "w.log", concurrency=2, env=unsplit) as worker:
        job_id = submit(client, tiny_model.model, tiny_model.dataset, long_job)
        done = wait_finished(client, job_id, 120, worker)
        log = worker.log_text()

    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["progress"]["stage"] == "done"
    assert f"job {job_id}: attempt" in log and "not starting a second one" in log, log[-3000:]


def test_queued_jobs_survive_a_redis_crash_and_post_meanwhile_is_503(
    make_settings: Any, client_for: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """Redis with its append-only file is killed with jobs queued and no worker running; a POST
    while it is down is refused with 503 and Retry-After and leaves no job; after the restart a
    worker runs every queued job."""
    data = tmp_path / "redis"
    data.mkdir()
    with redis_process(data) as server:
        settings = make_settings(redis_url=server.url, job_threads=1)
        client = client_for(settings)
        queued = [submit(client, tiny_model.model, tiny_model.dataset, SMALL | {"seed": s}) for s in range(3)]

        server.crash()
        response = client.post(
            "/v1/analyze",
            files={
                "model": ("m.onnx", tiny_model.model.read_bytes()),
                "dataset": ("d.npz", tiny_model.dataset.read_bytes()),
            },
            data={"config": json.dumps(SMALL)},
        )
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0

        server.start()
        listed = client.get("/v1/jobs", params={"limit": 10}).json()["jobs"]
        assert sorted(j["job_id"] for j in listed) == sorted(queued)  # no phantom from the 503
        assert {j["status"] for j in listed} == {"queued"}

        with celery_worker(settings, tmp_path / "worker.log", concurrency=2) as worker:
            done = [wait_finished(client, job_id, 60, worker) for job_id in queued]
    assert [d["status"] for d in done] == ["succeeded"] * 3, done


POISON_SANDBOX = textwrap.dedent(
    """\
    #!/bin/sh
    # Stands in for a model that takes its worker down, or crashes its runtime, every time.
    if grep -q "neuronscope-test:kill-worker" model.onnx; then kill -9 "$PPID"; exit 1; fi
    if grep -q "neuronscope-test:segfault" model.onnx; then
        exec "$1" -c 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'
    fi
    exec "$@"
    """
)


def marked_model(source: Path, out: Path, marker: str) -> Path:
    import onnx

    proto = onnx.load(str(source))
    proto.doc_string = f"neuronscope-test:{marker}"
    onnx.save(proto, str(out))
    return out


def test_a_poison_job_fails_after_max_attempts_and_the_worker_goes_on(
    make_settings: Any, client_for: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """A job whose every attempt kills the worker process running it ends as ``failed`` with
    ``too_many_attempts`` after ``job_max_attempts`` starts; a model that segfaults its analysis
    process fails at once with ``analysis_crashed``; the same worker then runs a good job."""
    settings = make_settings(job_threads=1, job_max_attempts=2)
    client = client_for(settings)
    sandbox = tmp_path / "sandbox.sh"
    sandbox.write_text(POISON_SANDBOX)
    sandbox.chmod(0o755)
    poison = marked_model(tiny_model.model, tmp_path / "poison.onnx", "kill-worker")
    crash = marked_model(tiny_model.model, tmp_path / "crash.onnx", "segfault")
    # A killed attempt's lease lasts until it expires: short here.
    env = {"NEURONSCOPE_SANDBOX_COMMAND": str(sandbox), "NEURONSCOPE_JOB_LEASE_S": "2"}
    with celery_worker(settings, tmp_path / "worker.log", concurrency=1, env=env) as worker:
        poisoned = submit(client, poison, tiny_model.dataset, SMALL)
        crashed = submit(client, crash, tiny_model.dataset, SMALL)
        good = submit(client, tiny_model.model, tiny_model.dataset, SMALL)
        records = [wait_finished(client, job_id, 90, worker) for job_id in (poisoned, crashed, good)]
        assert worker.alive()

    poison_record, crash_record, good_record = records
    assert poison_record["status"] == "failed", poison_record
    assert poison_record["error"]["code"] == "too_many_attempts"
    assert poison_record["attempts"] == 2
    assert crash_record["status"] == "failed", crash_record
    assert crash_record["error"]["code"] == "analysis_crashed"
    assert "SIGSEGV" in crash_record["error"]["message"]
    assert crash_record["attempts"] == 1
    assert good_record["status"] == "succeeded", good_record
