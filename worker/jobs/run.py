"""``run_job``: claim a job under its lease, stage its inputs, and run it as one analysis or start
it as a split one (:mod:`worker.jobs.split`), recording the outcome."""

from __future__ import annotations

import logging
import sys

from neuronscope.job_lease import HeldLease, new_owner
from neuronscope.jobs import JobError
from worker.jobs.context import WorkerContext, report_confinement, sandbox_refused, torchscript_refused
from worker.jobs.inputs import ArtifactTampered, fetch_inputs
from worker.jobs.outcome import RunOutcome, Split, finish, store_report
from worker.jobs.split import start_split
from worker.jobs.stage import run_stage
from worker.stale_dirs import job_workdir

log = logging.getLogger("neuronscope.worker")


def run_job(
    job_id: str, ctx: WorkerContext, *, python: str = sys.executable, split: bool = False
) -> RunOutcome | Split:
    """Run one job end to end; safe to call again for the same job (at-least-once delivery).

    While another attempt holds the job's lease (see ``neuronscope.job_lease``) nothing happens
    and the outcome is ``"leased"``: the caller checks again later. A finished job is left alone;
    a job whose report was stored by an earlier attempt is only marked succeeded; otherwise the
    analysis runs (again) in a fresh child process. With ``split``, a job large enough under the
    ``split`` settings is prepared here and returned as a :class:`Split` (its blocks for the
    caller to queue); it finishes later, elsewhere.
    """
    with ctx.leases.held(job_id, new_owner()) as lease:
        if lease is None:
            log.info(
                "job %s: attempt %s holds it; not starting a second one", job_id, ctx.leases.holder(job_id)
            )
            return "leased"
        outcome = _run_leased(job_id, ctx, python, split, lease)
        if lease.lost.is_set():
            log.warning(
                "job %s: this attempt lost its lease and stopped; the holder finishes the job", job_id
            )
            return "leased"
        return outcome


def _run_leased(
    job_id: str, ctx: WorkerContext, python: str, split: bool, lease: HeldLease
) -> RunOutcome | Split:
    record = ctx.jobs.start(job_id, max_attempts=ctx.settings.job_max_attempts)
    if record is None:
        log.warning("job %s: no such job record; dropping the task", job_id)
        return "missing"
    if record.status != "running":
        log.info("job %s: already %s; not running it again", job_id, record.status)
        return "skipped"
    if ctx.storage.get_report(job_id) is not None:
        return finish(ctx, job_id, "succeeded")
    if ctx.redis_client is not None:
        report_confinement(ctx.redis_client, ctx.settings.key_prefix, ctx.sandbox())
    refused = torchscript_refused(ctx, record) or sandbox_refused(
        ctx.settings, ctx.sandbox(), record.model_format
    )
    if refused is not None:
        return finish(ctx, job_id, "failed", refused)

    with job_workdir(job_id) as workdir:
        try:
            inputs = fetch_inputs(ctx, record, workdir)
        except FileNotFoundError as exc:
            return finish(
                ctx,
                job_id,
                "failed",
                JobError(code="artifact_missing", message=f"an input is gone from storage: {exc}"),
            )
        except ArtifactTampered as exc:
            log.error("job %s: %s", job_id, exc)
            return finish(ctx, job_id, "failed", JobError(code="artifact_tampered", message=str(exc)))
        if split:
            started = start_split(ctx, record, inputs, lease=lease, python=python)
            if started is not None:
                return started
        report = inputs.workdir / "report.json"
        args = [
            "--model", str(inputs.model), "--dataset", str(inputs.dataset),
            "--config", str(inputs.config), "--report", str(report),
        ]  # fmt: skip
        log.info("job %s: attempt %d starting", job_id, record.attempts)
        result, error = run_stage(ctx, job_id, inputs.workdir, args, python=python, lease=lease)
        if lease.lost.is_set():
            return "leased"
        if result.cancelled:
            return "cancelled"
        if error is None:
            return store_report(ctx, job_id, report)
        return finish(ctx, job_id, "failed", error)
