"""How a job attempt ends: an outcome, a split to dispatch, the report stored, the record moved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from neuronscope.contracts import Report
from neuronscope.jobs import JobError
from neuronscope.storage import StorageFull
from worker.engine.plan import ChunkKind
from worker.jobs.context import WorkerContext

log = logging.getLogger("neuronscope.worker")

RunOutcome = Literal["succeeded", "failed", "cancelled", "skipped", "missing", "split", "leased"]


@dataclass(frozen=True)
class Split:
    """A job continues as parallel blocks: the task layer queues ``chunks`` as a chord whose
    callback is the job's merge (:func:`worker.jobs.split.finish_split`)."""

    job_id: str
    chunks: tuple[tuple[ChunkKind, int], ...]
    #: The scratch marker :func:`worker.jobs.split.mark_dispatched` sets once they are queued.
    marker: str


def store_report(ctx: WorkerContext, job_id: str, report: Path) -> RunOutcome:
    """Validate the report the child wrote, store it once and mark the job succeeded."""
    failed = save_report(ctx, job_id, report)
    return failed if failed is not None else finish(ctx, job_id, "succeeded")


def save_report(ctx: WorkerContext, job_id: str, report: Path) -> RunOutcome | None:
    """Validate the report the child wrote and store it once: ``None`` when it is stored (the job
    still running), else the failed job's outcome.

    The file comes from the process that ran the model, so what is wrong with it is summarised,
    never quoted."""
    try:
        data = Report.model_validate_json(report.read_bytes()).to_json(indent=None).encode()
    except OSError:
        error = JobError(code="internal_error", message="the analysis process wrote no report")
        return finish(ctx, job_id, "failed", error)
    except ValidationError as exc:
        error = JobError(
            code="internal_error",
            message=f"the analysis process wrote a report that is not valid ({exc.error_count()} errors)",
        )
        return finish(ctx, job_id, "failed", error)
    ctx.jobs.set_progress(job_id, "saving report", 1.0)
    try:
        ctx.storage.put_report(job_id, data)
    except StorageFull as exc:
        log.error("job %s: %s", job_id, exc)
        error = JobError(
            code="insufficient_storage",
            message="the report could not be stored: the storage is full; free space and run the job again",
        )
        return finish(ctx, job_id, "failed", error)
    return None


def finish(
    ctx: WorkerContext, job_id: str, status: Literal["succeeded", "failed"], error: JobError | None = None
) -> RunOutcome:
    """Move a running job to ``status``; a job cancelled meanwhile stays cancelled."""
    record = ctx.jobs.finish(job_id, status, error)
    if record is None:
        return "missing"
    log.info("job %s: %s%s", job_id, record.status, f" ({error.code}: {error.message})" if error else "")
    return "cancelled" if record.status == "cancelled" else status
