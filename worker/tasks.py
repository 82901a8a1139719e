"""Celery tasks: thin adapters from a queued job id to :func:`worker.sandbox.run_job`."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery.exceptions import SoftTimeLimitExceeded

from neuronscope.jobs import JobError
from neuronscope.settings import ANALYSIS_TASK, get_settings
from worker.celery_app import app
from worker.sandbox import WorkerContext, run_job

log = logging.getLogger("neuronscope.worker")


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """This worker process's Redis client and storage, made on first use (after the pool forked)."""
    return WorkerContext.of(get_settings())


def _run_analysis(job_id: str) -> str:
    """Run job ``job_id`` (its record says what to analyse); returns how it ended."""
    ctx = worker_context()
    try:
        return run_job(job_id, ctx)
    except SoftTimeLimitExceeded:
        ctx.jobs.finish(
            job_id,
            "failed",
            JobError(code="time_limit_exceeded", message="the job ran past the worker's time limit"),
        )
        return "failed"


#: ``analysis.run``: acknowledged after it ran, requeued if the process running it dies.
run_analysis = app.task(name=ANALYSIS_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(
    _run_analysis
)
