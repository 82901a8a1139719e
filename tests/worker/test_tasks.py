"""``analysis.run`` and ``run_job`` against a real Redis and real analysis child processes (no
Celery worker here: see tests/integration for that)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from neuronscope.contracts import Report
from neuronscope.jobs import ArtifactRef, JobRecord
from neuronscope.settings import ANALYSIS_TASK, Settings, get_settings
from neuronscope.storage import ArtifactFormat, FileSystemStorage
from worker.celery_app import create_celery
from worker.jobs.context import WorkerContext
from worker.jobs.run import run_job

SMALL = json.dumps({"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"})


@pytest.fixture
def ctx(settings: Settings) -> WorkerContext:
    return WorkerContext.of(settings)


def _store(ctx: WorkerContext, kind: Any, path: Path) -> ArtifactRef:
    assert isinstance(ctx.storage, FileSystemStorage)
    with open(path, "rb") as f:
        staged = ctx.storage.stage(f, max_bytes=1 << 30)
    formats: dict[str, ArtifactFormat] = {"onnx": "onnx", "npz": "npz", "npy": "npy", "pt": "torchscript"}
    fmt = formats[path.suffix[1:]]
    info, _ = ctx.storage.commit(staged, kind, fmt)
    return ArtifactRef(id=info.id, format=info.format)


def _job(ctx: WorkerContext, tiny_model: Any, config: str = SMALL) -> JobRecord:
    return ctx.jobs.create(
        model=_store(ctx, "model", tiny_model.model),
        dataset=_store(ctx, "dataset", tiny_model.dataset),
        config=config,
    )


def test_celery_is_configured_for_at_least_once_delivery(settings: Settings) -> None:
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert (
        conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit > conf.task_soft_time_limit
    )
    assert conf.task_soft_time_limit > settings.job_time_limit_s


def test_the_worker_app_reads_the_environment_lazily(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``celery -A worker.celery_app`` configures itself from the environment on first use."""
    import worker.tasks
    from worker.celery_app import app as module_app

    monkeypatch.setenv("REDIS_URL", settings.require_redis_url())
    monkeypatch.setenv("NEURONSCOPE_QUEUE", "from-env")
    get_settings.cache_clear()
    try:
        assert worker.tasks.run_analysis.name == ANALYSIS_TASK
        app = module_app
        assert app.conf.task_default_queue == "from-env"
        task = app.tasks[ANALYSIS_TASK]
        assert task.acks_late and task.reject_on_worker_lost and task.ignore_result
    finally:
        get_settings.cache_clear()


def test_run_job_succeeds_and_stores_the_report(ctx: WorkerContext, tiny_model: Any) -> None:
    record = _job(ctx, tiny_model)
    assert run_job(record.job_id, ctx) == "succeeded"
    done = ctx.jobs.get(record.job_id)
    assert done is not None and done.status == "succeeded" and done.attempts == 1
    assert done.progress.stage == "done" and done.progress.fraction == 1.0
    assert done.started_at is not None and done.finished_at is not None
    data = ctx.storage.get_report(record.job_id)
    assert data is not None
    report = Report.model_validate_json(data)
    assert report.dataset.samples == tiny_model.samples

    # Redelivered after it finished: not run again, the report is left as it was.
    assert run_job(record.job_id, ctx) == "skipped"
    again = ctx.jobs.get(record.job_id)
    assert again is not None and again.attempts == 1 and again.finished_at == done.finished_at
    assert ctx.storage.get_report(record.job_id) == data


def test_engine_errors_fail_the_job_with_their_code(
    ctx: WorkerContext, tiny_model: Any, tmp_path: Path
) -> None:
    import numpy as np

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((8, 5), np.float32))
    record = ctx.jobs.create(
        model=_store(ctx, "model", tiny_model.model), dataset=_store(ctx, "dataset", wrong), config=SMALL
    )
    assert run_job(record.job_id, ctx) == "failed"
    failed = ctx.jobs.get(record.job_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code.startswith("dataset_"), failed.error
    assert "16" in failed.error.message
    assert ctx.storage.get_report(record.job_id) is None


def test_a_report_from_an_earlier_attempt_is_not_recomputed(ctx: WorkerContext, tiny_model: Any) -> None:
    record = _job(ctx, tiny_model)
    assert ctx.storage.put_report(record.job_id, b'{"stored": "earlier"}')
    # "false" is no Python: if the job ran a child process it would fail.
    assert run_job(record.job_id, ctx, python="false") == "succeeded"
    assert ctx.storage.get_report(record.job_id) == b'{"stored": "earlier"}'


def test_a_job_redelivered_too_often_fails(ctx: WorkerContext, tiny_model: Any) -> None:
    record = _job(ctx, tiny_model)
    for _ in range(ctx.settings.job_max_attempts):
        ctx.jobs.start(record.job_id, max_attempts=ctx.settings.job_max_attempts)
    assert run_job(record.job_id, ctx, python="false") == "skipped"
    failed = ctx.jobs.get(record.job_id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "too_many_attempts"


def test_cancelled_before_start_is_not_run(ctx: WorkerContext, tiny_model: Any) -> None:
    record = _job(ctx, tiny_model)
    ctx.jobs.cancel(record.job_id)
    assert run_job(record.job_id, ctx, python="false") == "skipped"
    assert ctx.jobs.status(record.job_id) == "cancelled"


def test_missing_job_and_missing_inputs(ctx: WorkerContext) -> None:
    assert run_job("00000000-0000-4000-8000-000000000000", ctx) == "missing"
    record = ctx.jobs.create(
        model=ArtifactRef(id="a" * 64, format="onnx"),
        dataset=ArtifactRef(id="b" * 64, format="npz"),
        config="{}",
    )
    assert run_job(record.job_id, ctx, python="false") == "failed"
    failed = ctx.jobs.get(record.job_id)
    assert failed is not None and failed.error is not None and failed.error.code == "artifact_missing"


def test_a_crashing_analysis_fails_the_job_not_the_worker(
    ctx: WorkerContext, tiny_model: Any, tmp_path: Path
) -> None:
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(0o755)
    record = _job(ctx, tiny_model)
    assert run_job(record.job_id, ctx, python=str(crash)) == "failed"
    failed = ctx.jobs.get(record.job_id)
    assert failed is not None and failed.error is not None and failed.error.code == "analysis_crashed"
    assert "SIGSEGV" in failed.error.message


def test_a_job_another_attempt_holds_is_not_started(ctx: WorkerContext, tiny_model: Any) -> None:
    record = _job(ctx, tiny_model)
    assert ctx.leases.acquire(record.job_id, "elsewhere")

    # "false" is no Python: if the job ran a child process it would fail.
    assert run_job(record.job_id, ctx, python="false") == "leased"

    held = ctx.jobs.get(record.job_id)
    assert held is not None and held.status == "queued" and held.attempts == 0
    assert ctx.leases.holder(record.job_id) == "elsewhere"


def test_the_task_checks_a_held_job_again_a_lease_later(
    ctx: WorkerContext, tiny_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import Retry

    from worker import tasks

    record = _job(ctx, tiny_model)
    ctx.leases.acquire(record.job_id, "elsewhere")
    asked: list[dict[str, Any]] = []

    def retry(**options: Any) -> Retry:
        asked.append(options)
        return Retry("held elsewhere", when=options["countdown"])

    monkeypatch.setattr(tasks, "worker_context", lambda: ctx)
    monkeypatch.setattr(tasks.run_analysis, "retry", retry)

    with pytest.raises(Retry):
        tasks.run_analysis(record.job_id)

    assert asked == [{"countdown": ctx.leases.ttl_s, "max_retries": None}]


def test_the_lease_is_held_and_renewed_while_the_analysis_runs(
    make_settings: Any, tiny_model: Any, tmp_path: Path
) -> None:
    ctx = WorkerContext.of(make_settings(job_lease_s=0.6, sandbox_launch="exec"))
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 2\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    record = _job(ctx, tiny_model)
    seen: list[tuple[str | None, bool]] = []

    def probe() -> None:
        time.sleep(1.5)  # past two of the lease's times to live
        seen.append((ctx.leases.holder(record.job_id), ctx.leases.acquire(record.job_id, "second")))

    prober = threading.Thread(target=probe)
    prober.start()
    assert run_job(record.job_id, ctx, python=str(slow)) == "succeeded"
    prober.join()

    ((holder, taken),) = seen
    assert holder is not None and holder != "second" and not taken
    assert ctx.leases.holder(record.job_id) is None, "released when the run ended"
