"""Celery tasks: thin adapters from queued job ids to the job use cases of :mod:`worker.jobs`.

``analysis.run`` runs a job (the API queues it). A use case that splits a large job (see
:mod:`worker.engine.plan`) returns a :class:`~worker.jobs.outcome.Split`, which this module turns
into a chord: ``analysis.chunk`` tasks in parallel on any worker, then ``analysis.merge``, which
may return the next wave. Control goes one way: tasks → :mod:`worker.jobs` →
:mod:`worker.child` → the engine. Every task is acknowledged after it ran and requeued if the
process running it dies; payloads are ids only.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import chord
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from neuronscope.jobs import JobError
from neuronscope.settings import ANALYSIS_TASK, get_settings
from worker.celery_app import app
from worker.engine.plan import ChunkKind
from worker.jobs.context import WorkerContext
from worker.jobs.outcome import RunOutcome, Split
from worker.jobs.run import run_job
from worker.jobs.split import ChunkOutcome, finish_split, mark_dispatched, run_chunk

log = logging.getLogger("neuronscope.worker")

CHUNK_TASK = "analysis.chunk"
MERGE_TASK = "analysis.merge"

_RELIABLE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """This worker process's Redis client and storage, made on first use (after the pool forked)."""
    return WorkerContext.of(get_settings())


def _warm_up(**_: Any) -> None:
    """Open this pool process's context (and start its zygote) before the first job arrives."""
    try:
        worker_context()
    except Exception:  # the first job builds it again and reports what is wrong
        log.warning("could not prepare the worker process before its first job", exc_info=True)


worker_process_init.connect(_warm_up, weak=False)


def _time_limit_exceeded(ctx: WorkerContext, job_id: str) -> None:
    ctx.jobs.finish(
        job_id,
        "failed",
        JobError(code="time_limit_exceeded", message="the job ran past the worker's time limit"),
    )


def _queued(ctx: WorkerContext, outcome: RunOutcome | Split) -> RunOutcome:
    """``outcome``, with a :class:`Split` queued first as a chord of its blocks whose callback is
    the job's merge."""
    if not isinstance(outcome, Split):
        return outcome
    header = [run_chunk_task.si(outcome.job_id, kind, index) for kind, index in outcome.chunks]
    chord(header)(merge_task.si(outcome.job_id))
    mark_dispatched(ctx, outcome)
    return "split"


def _run_analysis(job_id: str) -> str:
    """Run job ``job_id`` (its record says what to analyse); returns how it ended. While another
    attempt holds the job (a second delivery of a long job), the task is retried a lease's time
    to live later, for as long as that lasts: when it finally runs, it finds the job finished, or
    runs it if the holder died."""
    ctx = worker_context()
    try:
        outcome = _queued(ctx, run_job(job_id, ctx, split=True))
    except SoftTimeLimitExceeded:
        _time_limit_exceeded(ctx, job_id)
        return "failed"
    if outcome == "leased":
        raise run_analysis.retry(countdown=ctx.leases.ttl_s, max_retries=None)
    return outcome


def _run_chunk(job_id: str, kind: ChunkKind, index: int) -> ChunkOutcome:
    """One chunk of a split job; never raises for the job's own failures, so the chord completes
    and its merge task cleans up."""
    ctx = worker_context()
    try:
        return run_chunk(ctx, job_id, kind, index)
    except SoftTimeLimitExceeded:
        _time_limit_exceeded(ctx, job_id)
        return "failed"


def _merge(job_id: str) -> RunOutcome:
    ctx = worker_context()
    try:
        return _queued(ctx, finish_split(ctx, job_id))
    except SoftTimeLimitExceeded:
        _time_limit_exceeded(ctx, job_id)
        return "failed"


#: ``analysis.run``: acknowledged after it ran, requeued if the process running it dies.
run_analysis = app.task(name=ANALYSIS_TASK, ignore_result=True, **_RELIABLE)(_run_analysis)
#: ``analysis.chunk``: its (deterministic) result feeds the chord, so it is kept.
run_chunk_task = app.task(name=CHUNK_TASK, ignore_result=False, **_RELIABLE)(_run_chunk)
#: ``analysis.merge``: the chord's callback.
merge_task = app.task(name=MERGE_TASK, ignore_result=True, **_RELIABLE)(_merge)
