"""Running a large analysis as parallel tasks: the worker side of :mod:`worker.chunking`.

:func:`maybe_split` takes over a claimed job when its plan splits it: it runs the ``prepare``
stage, publishes the stage's files to the job's shared scratch directory and hands the chunks to
``dispatch`` (the Celery chord, wired in :mod:`worker.tasks`). :func:`run_chunk` runs one chunk
and :func:`finish_split` the merge. Each stage runs in its own sandboxed analysis process, like a
whole analysis does, and each is safe to run again after its worker died (at-least-once
delivery): a chunk whose result is already published is not recomputed, a chunk or merge whose
worker died ``job_max_attempts`` times fails the job with ``too_many_attempts``, and a job that
failed or was cancelled makes the remaining stages skip. Nothing here imports Celery.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Literal

from pydantic import ValidationError

from neuronscope.contracts import AnalysisConfig
from neuronscope.errors import NeuronscopeError
from neuronscope.jobs import JobError, JobRecord
from neuronscope.validation import inspect_dataset
from worker.chunking import (
    BASE_REPORT_FILE,
    PATTERNS_FILE,
    PLAN_FILE,
    TD_PAIRS_FILE,
    ChunkKind,
    ChunkPlan,
    chunk_file,
    plan_chunks,
)
from worker.sandbox import (
    ArtifactTampered,
    JobInputs,
    RunOutcome,
    WorkerContext,
    fetch_inputs,
    finish,
    run_runner,
    store_report,
)
from worker.scratch import JobScratch
from worker.stale_dirs import job_workdir

log = logging.getLogger("neuronscope.worker")

#: Queues the chunks of a split job and the merge after them.
Dispatch = Callable[[str, ChunkPlan], None]
ChunkOutcome = Literal["done", "skipped", "failed", "cancelled"]

_DISPATCHED = "dispatched"


def plan_for(ctx: WorkerContext, record: JobRecord, inputs: JobInputs) -> ChunkPlan | None:
    """The job's chunk plan under this worker's policy; ``None`` when it runs as one analysis
    (splitting off, a small job, or inputs the single analysis should report on)."""
    policy = ctx.worker
    if not policy.chunk_td_points and not policy.chunk_ps_pairs:
        return None
    try:
        config = AnalysisConfig.model_validate_json(record.config)
        samples = inspect_dataset(inputs.dataset).samples
    except (ValidationError, NeuronscopeError, OSError, ValueError):
        return None
    plan = plan_chunks(config, samples, td_points=policy.chunk_td_points, ps_pairs=policy.chunk_ps_pairs)
    return plan if plan.split else None


def maybe_split(
    ctx: WorkerContext,
    record: JobRecord,
    inputs: JobInputs,
    *,
    dispatch: Dispatch,
    python: str = sys.executable,
) -> RunOutcome | None:
    """Start ``record`` as a split analysis, or ``None`` to run it as one analysis."""
    plan = plan_for(ctx, record, inputs)
    if plan is None:
        return None
    job_id = record.job_id
    scratch = JobScratch(ctx.settings, job_id)
    if scratch.has(_DISPATCHED):
        log.info("job %s: its chunks were queued by an earlier attempt", job_id)
        return "split"
    work = inputs.workdir
    (work / PLAN_FILE).write_text(plan.model_dump_json())
    log.info(
        "job %s: attempt %d, split into %d TD and %d PS chunks",
        job_id,
        record.attempts,
        len(plan.td_ranges),
        len(plan.ps_rows),
    )
    args = [
        "--stage", "prepare", "--model", str(inputs.model), "--dataset", str(inputs.dataset),
        "--config", str(inputs.config), "--work", str(work),
    ]  # fmt: skip
    result, error = run_runner(ctx, job_id, work, args, python=python)
    if result.cancelled:
        return "cancelled"
    if error is not None:
        return finish(ctx, job_id, "failed", error)
    names = [PLAN_FILE, BASE_REPORT_FILE]
    names += [PATTERNS_FILE] if plan.ps_rows else []
    names += [TD_PAIRS_FILE] if plan.td_ranges else []
    for name in names:
        scratch.put(name, work / name)
    ctx.jobs.set_progress(job_id, "chunks", 0.0)
    dispatch(job_id, plan)
    scratch.mark(_DISPATCHED)
    return "split"


def _counter_key(ctx: WorkerContext, job_id: str) -> str:
    return f"{ctx.settings.key_prefix}:split:{job_id}"


def _count(ctx: WorkerContext, job_id: str, field: str) -> int:
    client = ctx.client()
    key = _counter_key(ctx, job_id)
    value = int(client.hincrby(key, field, 1))
    client.expire(key, max(ctx.settings.job_ttl_s, 7 * 24 * 3600))
    return value


def _too_many_attempts(ctx: WorkerContext, job_id: str, what: str) -> JobError | None:
    attempts = _count(ctx, job_id, f"attempts:{what}")
    limit = ctx.settings.job_max_attempts
    if attempts <= limit:
        return None
    return JobError(
        code="too_many_attempts",
        message=f"{what} of the job was started {limit} times and its worker stopped each time before "
        "it finished (crash, out of memory or shutdown); not retrying",
    )


def run_chunk(
    ctx: WorkerContext, job_id: str, kind: ChunkKind, index: int, *, python: str = sys.executable
) -> ChunkOutcome:
    """Run chunk ``index`` of ``kind`` of a split job and publish its result."""
    record = ctx.jobs.get(job_id)
    if record is None or record.status != "running":
        return "skipped"
    scratch = JobScratch(ctx.settings, job_id)
    name = chunk_file(kind, index)
    if scratch.has(name):
        return "done"
    refused = _too_many_attempts(ctx, job_id, f"chunk {kind} {index}")
    if refused is not None:
        finish(ctx, job_id, "failed", refused)
        return "failed"
    with job_workdir(job_id) as work:
        config = work / "config.json"
        args = ["--stage", kind, "--work", str(work), "--chunk", str(index), "--config", str(config)]
        try:
            if kind == "td":
                inputs = fetch_inputs(ctx, record, work)
                args += ["--model", str(inputs.model), "--dataset", str(inputs.dataset)]
            else:
                config.write_text(record.config)
            for needed in (PLAN_FILE, TD_PAIRS_FILE if kind == "td" else PATTERNS_FILE):
                scratch.get(needed, work / needed)
        except ArtifactTampered as exc:
            finish(ctx, job_id, "failed", JobError(code="artifact_tampered", message=str(exc)))
            return "failed"
        except FileNotFoundError as exc:
            gone = JobError(
                code="artifact_missing", message=f"an input of chunk {kind} {index} is gone: {exc}"
            )
            finish(ctx, job_id, "failed", gone)
            return "failed"
        result, error = run_runner(ctx, job_id, work, args, python=python, on_progress=lambda s, f: None)
        if result.cancelled:
            return "cancelled"
        if error is not None:
            finish(ctx, job_id, "failed", error)
            return "failed"
        scratch.put(name, work / name)
    plan = ChunkPlan.model_validate_json(scratch.path(PLAN_FILE).read_text())
    done = _count(ctx, job_id, "done")
    ctx.jobs.set_progress(job_id, "chunks", min(done / max(len(plan.chunks()), 1), 1.0))
    return "done"


def finish_split(ctx: WorkerContext, job_id: str, *, python: str = sys.executable) -> RunOutcome:
    """Merge a split job's chunks into its report, store it and finish the job; clean up."""
    scratch = JobScratch(ctx.settings, job_id)
    try:
        record = ctx.jobs.get(job_id)
        if record is None:
            return "missing"
        if record.status != "running":
            return "skipped"
        if ctx.storage.get_report(job_id) is not None:
            return finish(ctx, job_id, "succeeded")
        refused = _too_many_attempts(ctx, job_id, "the merge")
        if refused is not None:
            return finish(ctx, job_id, "failed", refused)
        ctx.jobs.set_progress(job_id, "merging", 0.0)
        with job_workdir(job_id) as work:
            try:
                scratch.get(PLAN_FILE, work / PLAN_FILE)
                plan = ChunkPlan.model_validate_json((work / PLAN_FILE).read_text())
                names = [BASE_REPORT_FILE, *(chunk_file(kind, index) for kind, index in plan.chunks())]
                names += [TD_PAIRS_FILE] if plan.td_ranges else []
                for name in names:
                    scratch.get(name, work / name)
            except FileNotFoundError as exc:
                gone = JobError(code="internal_error", message=f"a chunk result is missing: {exc}")
                return finish(ctx, job_id, "failed", gone)
            report = work / "report.json"
            args = ["--stage", "merge", "--work", str(work), "--report", str(report)]
            result, error = run_runner(ctx, job_id, work, args, python=python)
            if result.cancelled:
                return "cancelled"
            if error is not None:
                return finish(ctx, job_id, "failed", error)
            return store_report(ctx, job_id, report)
    finally:
        if ctx.jobs.status(job_id) != "running":
            scratch.remove()
            ctx.client().delete(_counter_key(ctx, job_id))
