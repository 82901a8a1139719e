"""Running a large analysis as parallel tasks: the worker side of :mod:`worker.engine.plan`.

:func:`start_split` takes over a claimed job when its plan splits it: it runs the ``prepare``
stage, publishes the stage's files to the job's shared scratch directory and returns the first
wave of blocks as a :class:`~worker.jobs.outcome.Split` (the task layer queues it as a chord and
then calls :func:`mark_dispatched`): the capture blocks, or the PS and TD blocks when the capture
ran in ``prepare``. :func:`run_chunk` runs one block; :func:`finish_split`, the chord's callback,
runs ``gather`` and returns the PS and TD blocks as the next wave after a capture wave, and
merges after the last wave. Each stage runs in its own
sandboxed analysis process, like a whole analysis does, and each is safe to run again after its
worker died (at-least-once delivery): a block whose result is already published is not
recomputed, a block, gather or merge whose worker died ``job_max_attempts`` times fails the job
with ``too_many_attempts``, and a job that failed or was cancelled makes the remaining stages
skip. Nothing here imports Celery.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from neuronscope.contracts import AnalysisConfig
from neuronscope.errors import NeuronscopeError
from neuronscope.job_lease import HeldLease
from neuronscope.jobs import JobError, JobRecord
from neuronscope.validation import inspect_dataset
from worker.engine.plan import (
    CAPTURED_FILE,
    DATASET_LABELS_FILE,
    FACTS_FILE,
    PLAN_FILE,
    TD_PAIRS_FILE,
    TD_PREPARED_FILE,
    ChunkKind,
    ChunkPlan,
    chunk_file,
    plan_chunks,
)
from worker.jobs.context import WorkerContext
from worker.jobs.inputs import ArtifactTampered, JobInputs, fetch_inputs
from worker.jobs.outcome import RunOutcome, Split, finish, save_report
from worker.jobs.scratch import JobScratch, ScratchGone
from worker.jobs.stage import run_stage
from worker.stale_dirs import job_workdir

log = logging.getLogger("neuronscope.worker")

ChunkOutcome = Literal["done", "skipped", "failed", "cancelled"]

_DISPATCHED = "dispatched"
_DISPATCHED_PAIRS = "dispatched-pairs"


def plan_for(ctx: WorkerContext, record: JobRecord, inputs: JobInputs) -> ChunkPlan | None:
    """The job's chunk plan under this worker's policy; ``None`` when it runs as one analysis
    (splitting off, a small job, or inputs the single analysis should report on)."""
    policy = ctx.settings
    if not policy.chunk_td_points and not policy.chunk_ps_pairs and not policy.chunk_capture_samples:
        return None
    try:
        config = AnalysisConfig.model_validate_json(record.config)
        samples = (
            record.dataset_samples
            if record.dataset_samples is not None
            else inspect_dataset(inputs.dataset).samples
        )
    except (ValidationError, NeuronscopeError, OSError, ValueError):
        return None
    plan = plan_chunks(
        config,
        samples,
        td_points=policy.chunk_td_points,
        ps_pairs=policy.chunk_ps_pairs,
        capture_samples=policy.chunk_capture_samples,
    )
    return plan if plan.split else None


def start_split(
    ctx: WorkerContext,
    record: JobRecord,
    inputs: JobInputs,
    *,
    lease: HeldLease | None = None,
    python: str = sys.executable,
) -> RunOutcome | Split | None:
    """Start ``record`` as a split analysis: its first wave of blocks to queue, or an outcome when
    the job ended instead; ``None`` to run it as one analysis."""
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
        "job %s: attempt %d, split into %d capture, %d TD and %d PS blocks",
        job_id,
        record.attempts,
        len(plan.capture_ranges),
        len(plan.td_ranges),
        len(plan.ps_rows),
    )
    args = [
        "--stage", "prepare", "--model", str(inputs.model), "--dataset", str(inputs.dataset),
        "--config", str(inputs.config), "--work", str(work),
    ]  # fmt: skip
    result, error = run_stage(ctx, job_id, work, args, python=python, lease=lease)
    if result.cancelled:
        return "cancelled"
    if error is not None:
        return finish(ctx, job_id, "failed", error)
    names = [PLAN_FILE, FACTS_FILE]
    if plan.capture_ranges:
        names += [DATASET_LABELS_FILE]
    else:
        names += [CAPTURED_FILE]
        names += [TD_PAIRS_FILE] if plan.td_pairs else []
        names += [TD_PREPARED_FILE] if plan.td_pairs and not plan.td_ranges else []
    scratch.create()
    for name in names:
        scratch.put(name, work / name)
    ctx.jobs.set_progress(job_id, "chunks", 0.0)
    return Split(job_id, tuple(plan.capture_chunks() or plan.pair_chunks()), marker=_DISPATCHED)


def mark_dispatched(ctx: WorkerContext, split: Split) -> None:
    """Record that ``split``'s blocks are queued, so a later delivery does not queue them again
    (called after they are: a worker dying in between queues them twice, which is harmless)."""
    with contextlib.suppress(ScratchGone):  # the job already ended: nothing to mark
        JobScratch(ctx.settings, split.job_id).mark(split.marker)


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
            if kind in ("capture", "td"):
                inputs = fetch_inputs(ctx, record, work)
                args += ["--model", str(inputs.model), "--dataset", str(inputs.dataset)]
            else:
                config.write_text(record.config)
            needs = {"capture": [], "td": [TD_PAIRS_FILE], "ps": [CAPTURED_FILE]}[kind]
            for needed in (PLAN_FILE, *needs):
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
        result, error = run_stage(ctx, job_id, work, args, python=python, on_progress=lambda s, f: None)
        if result.cancelled:
            return "cancelled"
        if error is not None:
            finish(ctx, job_id, "failed", error)
            return "failed"
        try:
            scratch.put(name, work / name)
        except ScratchGone:
            log.info("job %s: chunk %s %d finished after the job ended; result dropped", job_id, kind, index)
            return "skipped"
    try:
        plan = ChunkPlan.model_validate_json(scratch.path(PLAN_FILE).read_text())
    except FileNotFoundError:
        return "done"  # the job was merged and cleaned up meanwhile
    done = _count(ctx, job_id, "done")
    ctx.jobs.set_progress(job_id, "chunks", min(done / max(len(plan.chunks()), 1), 1.0))
    return "done"


def finish_split(ctx: WorkerContext, job_id: str, *, python: str = sys.executable) -> RunOutcome | Split:
    """The callback of a wave of blocks: after the capture blocks, gather them and dispatch the PS
    and TD blocks (or merge when there are none); after the last wave, merge the blocks into the
    report, store it and finish the job; clean up once the job is over."""
    scratch = JobScratch(ctx.settings, job_id)
    try:
        record = ctx.jobs.get(job_id)
        if record is None:
            return "missing"
        if record.status != "running":
            return "skipped"
        if ctx.storage.get_report(job_id) is not None:
            scratch.remove()
            return finish(ctx, job_id, "succeeded")
        plan = ChunkPlan.model_validate_json(scratch.path(PLAN_FILE).read_text())
        if plan.capture_ranges and not scratch.has(CAPTURED_FILE):
            gathered = _gather(ctx, record, scratch, plan, python)
            if gathered is not None:
                return gathered
        pair_chunks = plan.pair_chunks()
        if plan.capture_ranges and pair_chunks:
            if not scratch.has(_DISPATCHED_PAIRS):
                return Split(job_id, tuple(pair_chunks), marker=_DISPATCHED_PAIRS)
            if not all(scratch.has(chunk_file(kind, index)) for kind, index in pair_chunks):
                return "split"  # a second delivery of the capture wave's callback
        return _merge(ctx, record, scratch, plan, python)
    except FileNotFoundError as exc:
        gone = JobError(code="internal_error", message=f"a file of the split job is missing: {exc}")
        return finish(ctx, job_id, "failed", gone)
    finally:
        if ctx.jobs.status(job_id) != "running":
            scratch.remove()
            ctx.client().delete(_counter_key(ctx, job_id))


def _gather(
    ctx: WorkerContext, record: JobRecord, scratch: JobScratch, plan: ChunkPlan, python: str
) -> RunOutcome | None:
    """Join the capture blocks (the ``gather`` stage) and publish the whole capture and the TD
    pairs; an outcome when the job ended instead."""
    with job_workdir(record.job_id) as work:
        names = [PLAN_FILE, DATASET_LABELS_FILE, *(chunk_file(k, i) for k, i in plan.capture_chunks())]
        ended = _callback_stage(ctx, record, scratch, work, "gather", names, python)
        if ended is not None:
            return ended
        for name in [CAPTURED_FILE] + ([TD_PAIRS_FILE] if plan.td_pairs else []):
            scratch.put(name, work / name)
    return None


def _merge(
    ctx: WorkerContext, record: JobRecord, scratch: JobScratch, plan: ChunkPlan, python: str
) -> RunOutcome:
    """Merge every block into the report (the ``merge`` stage), store it and finish the job."""
    job_id = record.job_id
    with job_workdir(job_id) as work:
        names = [PLAN_FILE, FACTS_FILE, CAPTURED_FILE, *(chunk_file(k, i) for k, i in plan.pair_chunks())]
        names += [TD_PAIRS_FILE] if plan.td_pairs else []
        names += [TD_PREPARED_FILE] if plan.td_pairs and not plan.td_ranges else []
        report = work / "report.json"
        ended = _callback_stage(ctx, record, scratch, work, "merge", names, python, ["--report", str(report)])
        if ended is not None:
            return ended
        failed = save_report(ctx, job_id, report)
    if failed is not None:
        return failed
    scratch.remove()  # before the job shows succeeded: no one sees a finished job's files
    return finish(ctx, job_id, "succeeded")


def _callback_stage(
    ctx: WorkerContext,
    record: JobRecord,
    scratch: JobScratch,
    work: Path,
    stage: Literal["gather", "merge"],
    names: Sequence[str],
    python: str,
    extra: Sequence[str] = (),
) -> RunOutcome | None:
    """Run a chord callback's ``stage`` in a confined child on copies of the job's files ``names``
    in ``work``; the job's outcome when it ended instead (too many attempts, cancelled, failed)."""
    job_id = record.job_id
    refused = _too_many_attempts(ctx, job_id, f"the {stage}")
    if refused is not None:
        return finish(ctx, job_id, "failed", refused)
    ctx.jobs.set_progress(job_id, {"gather": "gathering", "merge": "merging"}[stage], 0.0)
    for name in names:
        scratch.get(name, work / name)
    (work / "config.json").write_text(record.config)
    args = ["--stage", stage, "--work", str(work), "--config", str(work / "config.json"), *extra]
    result, error = run_stage(ctx, job_id, work, args, python=python)
    if result.cancelled:
        return "cancelled"
    if error is not None:
        return finish(ctx, job_id, "failed", error)
    return None
