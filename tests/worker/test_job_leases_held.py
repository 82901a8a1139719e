"""A job's lease is held by a heartbeat for the whole attempt, whatever the attempt is doing, and
an attempt that loses its lease stops its analysis process (real Redis, real analysis processes)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from stored import store_artifact

import worker.jobs.stage as stage
from neuronscope.settings import Settings
from worker.child.launch import ChildResult
from worker.jobs.context import WorkerContext
from worker.jobs.run import run_job

LEASE_S = 0.6
SMALL = json.dumps({"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"})
#: Keeps the analysis process busy far longer than the tests wait.
SLOW = json.dumps({"transition_density": {"pairs": {"count": 2000}, "points": 100_000}, "device": "cpu"})


@pytest.fixture
def ctx(make_settings: Any) -> WorkerContext:
    settings: Settings = make_settings(job_threads=1, job_lease_s=LEASE_S)
    return WorkerContext.of(settings)


def _job(ctx: WorkerContext, tiny_model: Any, config: str) -> str:
    record = ctx.jobs.create(
        model=store_artifact(ctx, "model", tiny_model.model, "onnx"),
        dataset=store_artifact(ctx, "dataset", tiny_model.dataset, "npz"),
        config=config,
    )
    return record.job_id


def test_the_lease_is_held_while_the_attempt_waits_for_a_slow_launcher(
    ctx: WorkerContext, tiny_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher that takes five lease lifetimes to start the analysis process (a cold zygote on
    a loaded machine) does not let a second delivery of the job start a second attempt."""
    real_run_child = stage.run_child

    def slow_launcher(*args: Any, **kwargs: Any) -> ChildResult:
        time.sleep(5 * LEASE_S)
        return real_run_child(*args, **kwargs)

    monkeypatch.setattr(stage, "run_child", slow_launcher)
    job_id = _job(ctx, tiny_model, SMALL)
    outcomes: list[str] = []
    first = threading.Thread(target=lambda: outcomes.append(run_job(job_id, ctx)))
    first.start()
    while ctx.leases.holder(job_id) is None:
        time.sleep(0.01)
    second_deliveries = []
    while first.is_alive():
        second_deliveries.append(run_job(job_id, ctx))
        time.sleep(LEASE_S / 2)
    first.join()
    assert outcomes == ["succeeded"], ctx.jobs.get(job_id)
    assert len(second_deliveries) >= 8 and set(second_deliveries) == {"leased"}, second_deliveries
    record = ctx.jobs.get(job_id)
    assert record is not None and record.status == "succeeded" and record.attempts == 1


def test_an_attempt_that_loses_its_lease_stops_its_analysis_process(
    ctx: WorkerContext, tiny_model: Any
) -> None:
    job_id = _job(ctx, tiny_model, SLOW)
    outcomes: list[str] = []
    attempt = threading.Thread(target=lambda: outcomes.append(run_job(job_id, ctx)))
    attempt.start()
    deadline = time.monotonic() + 60
    while (record := ctx.jobs.get(job_id)) is None or record.progress.stage != "transition_density":
        assert attempt.is_alive() and time.monotonic() < deadline, record
        time.sleep(0.1)
    # Another attempt takes the lease over (as after an expiry on a stalled Redis connection).
    first_owner = str(ctx.leases.holder(job_id))
    ctx.leases.release(job_id, first_owner)
    assert ctx.leases.acquire(job_id, "another-attempt")
    stolen_at = time.monotonic()
    assert first_owner != "another-attempt"
    attempt.join(timeout=30)
    assert not attempt.is_alive()
    assert outcomes == ["leased"]
    assert time.monotonic() - stolen_at < 10 * LEASE_S
    record = ctx.jobs.get(job_id)
    assert record is not None and record.status == "running", (
        "the attempt that lost its lease finished the job"
    )
    # the thief's lease may have expired by now (nobody renews it), but the first attempt never
    # took it back
    assert ctx.leases.holder(job_id) in ("another-attempt", None)
