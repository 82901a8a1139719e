"""One stage of a job's analysis in an analysis process: the runner's command line from the
settings and the host's confinement, the job's limits, progress to the record, and a stop when
the job is cancelled or its lease is lost."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuronscope.job_lease import HeldLease
from neuronscope.jobs import JobError, JobStore
from worker.child.environment import child_env, worker_zygote
from worker.child.launch import ChildResult, Limits, outcome_error, run_child
from worker.child.zygote import ZygoteError
from worker.jobs.context import WorkerContext

log = logging.getLogger("neuronscope.worker")


class _Progress:
    """Writes progress to the job record, at most every ``interval_s`` unless the stage changes."""

    def __init__(self, jobs: JobStore, job_id: str, interval_s: float = 0.5) -> None:
        self._jobs, self._job_id, self._interval = jobs, job_id, interval_s
        self._stage: str | None = None
        self._last = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < self._interval and fraction < 1.0:
            return
        self._stage, self._last = stage, now
        try:
            self._jobs.set_progress(self._job_id, stage, fraction)
        except Exception as exc:
            log.warning("job %s: could not record progress: %s", self._job_id, exc)


def run_stage(
    ctx: WorkerContext,
    job_id: str,
    workdir: Path,
    args: list[str],
    *,
    python: str = sys.executable,
    on_progress: Callable[[str, float], None] | None = None,
    lease: HeldLease | None = None,
) -> tuple[ChildResult, JobError | None]:
    """Run ``python -m worker.child.runner ARGS`` for ``job_id`` in ``workdir`` under the job's limits,
    stopping it when the job is cancelled or ``lease`` is lost (another attempt may run it).

    Returns the child's result and why it failed (``None`` when it succeeded or was stopped).
    """

    def should_cancel() -> bool:
        if lease is not None and lease.lost.is_set():
            return True
        return ctx.jobs.status(job_id) == "cancelled"

    limits = Limits.of(ctx.settings)
    prefix = ctx.settings.sandbox_prefix
    fork = ctx.settings.launch == "fork" and python == sys.executable
    runner = [
        "-m", "worker.child.runner", *args,
        "--memory-mb", str(limits.memory_mb), "--cpu-seconds", str(limits.cpu_s),
        # Under a sandbox command the runner's parent is that command, not this process; a forked
        # runner's parent is the zygote, which checks that itself.
        "--parent-pid", "0" if prefix or fork else str(os.getpid()),
    ]  # fmt: skip
    if not ctx.settings.allow_torchscript:
        runner.append("--no-torchscript")
    if ctx.sandbox().active:
        runner += ["--confine", "required"]
    else:
        runner += ["--confine", "best-effort"]
        if ctx.settings.sandbox_allow_unconfined:
            runner.append("--allow-unconfined-code")
    options: dict[str, Any] = {
        "cwd": workdir,
        "env": child_env(workdir, limits.threads),
        "wall_s": limits.wall_s,
        "on_progress": on_progress or _Progress(ctx.jobs, job_id),
        "should_cancel": should_cancel,
    }
    result: ChildResult | None = None
    if fork:
        try:
            result = run_child(runner, zygote=worker_zygote(limits.threads), **options)
        except ZygoteError as exc:
            log.warning("job %s: the warm launcher failed (%s); starting a fresh process", job_id, exc)
    if result is None:
        result = run_child([*prefix, python, *runner], **options)
    if result.cancelled:
        lost = lease is not None and lease.lost.is_set()
        log.info("job %s: %s; analysis process stopped", job_id, "lease lost" if lost else "cancelled")
        return result, None
    error = outcome_error(result, limits)
    if error is not None and result.returncode != 0 and result.error is None:
        log.warning(
            "job %s: analysis process ended with %s; stderr:\n%s",
            job_id,
            result.returncode,
            result.stderr_tail,
        )
    return result, error
