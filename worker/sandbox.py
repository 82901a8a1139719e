"""Running one job: claim its record, run the analysis in a limited child process, record the outcome.

The child (:mod:`worker.runner`) gets copies of its inputs in a private temporary directory, an
environment without the service's settings, resource limits, and its own process group, so a
cancel or a time-out kills it and everything it started. Whatever it does (a segfault, running
out of memory, hanging), this process only sees an exit status and fails the job with a code a
person can act on.

By default (``NEURONSCOPE_SANDBOX_LAUNCH=fork``) the child is forked from this worker process's
warm launcher (:mod:`worker.zygote`), which has the libraries imported already; with
``exec`` or a ``NEURONSCOPE_SANDBOX_COMMAND`` it is a fresh ``python -m worker.runner``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from redis import Redis

import worker
from neuronscope.confinement import default_paths, exposing_root, host_confinement
from neuronscope.confinement_reports import HostConfinement, publish, this_host
from neuronscope.contracts import Report
from neuronscope.job_lease import HeldLease, JobLeases, new_owner
from neuronscope.jobs import JobError, JobRecord, JobStore, connect
from neuronscope.settings import Settings
from neuronscope.storage import ArtifactKind, Storage, StorageFull, open_storage
from worker.stale_dirs import job_workdir
from worker.zygote import Zygote, ZygoteError, get_zygote

log = logging.getLogger("neuronscope.worker")

_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "npz": ".npz", "npy": ".npy"}
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
_MAX_LINE = 1024 * 1024
#: What an error reported by the analysis process may look like: its code, and its message cut to
#: printable characters and this length (the process runs the uploaded model).
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ERROR_MESSAGE_CHARS = 500
#: Model formats that are code: opened only in a confined process (or where the operator opted out).
CODE_FORMATS = frozenset({"torchscript", "pt2"})


@dataclass(frozen=True)
class Limits:
    wall_s: float
    cpu_s: int = 0
    memory_mb: int = 0
    threads: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            wall_s=float(settings.job_time_limit_s),
            cpu_s=settings.job_cpu_time_limit_s,
            memory_mb=settings.job_memory_limit_mb,
            threads=settings.job_threads,
        )


@dataclass
class ChildResult:
    """What the child process did: its exit status and what it said on the protocol channel."""

    returncode: int | None
    done: bool = False
    error: JobError | None = None
    cancelled: bool = False
    timed_out: bool = False
    stderr_tail: str = ""
    stages: list[str] = field(default_factory=list)


#: Variables a model's process may see, by name; everything else in the worker's environment (its
#: Redis URL, API keys, cloud credentials, whatever the operator set) stays out.
_CHILD_ENV_PASSED = (
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
)


def child_env(workdir: Path, threads: int) -> dict[str, str]:
    """The analysis process's whole environment, built from an allow-list (never by removing
    known names): locale and GPU selection passed on, the rest fixed here."""
    env = {name: os.environ[name] for name in _CHILD_ENV_PASSED if name in os.environ}
    root = str(Path(worker.__file__).resolve().parent.parent)
    env |= {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": root,
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def launcher_env(threads: int) -> dict[str, str]:
    """The environment the zygote starts with: the analysis environment without a job's parts
    (the thread counts too, so the runtimes' thread pools are sized as in a fresh process)."""
    env = child_env(Path(tempfile.gettempdir()), threads=threads)
    env.pop("TMPDIR", None)
    env.pop("HOME", None)
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def worker_zygote(threads: int) -> Zygote:
    """This worker process's zygote for jobs with ``threads`` threads (started on first use)."""
    return get_zygote(launcher_env(threads))


class _Child(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def _kill_group(proc: _Child) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_child(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    wall_s: float,
    on_progress: Callable[[str, float], None],
    should_cancel: Callable[[], bool],
    poll_s: float = 0.5,
    zygote: Zygote | None = None,
) -> ChildResult:
    """Run ``command`` in its own process group and follow its JSON-lines channel on stdout.

    With ``zygote``, ``command`` is Python's arguments (``-m MODULE ...`` or ``-c CODE ...``) and
    the child is forked from it; otherwise it is a command line to execute.
    Returns once it exited, or after killing it (with its whole group) when ``should_cancel()``
    turns true or ``wall_s`` has passed.
    """
    stderr_path = cwd / "stderr.log"
    result = ChildResult(returncode=None)
    deadline = time.monotonic() + wall_s
    proc: _Child
    with open(stderr_path, "wb") as stderr:
        if zygote is None:
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
            assert popen.stdout is not None
            proc, reader = popen, popen.stdout
        else:
            read_end, write_end = os.pipe()
            try:
                proc = zygote.spawn(command, cwd=cwd, env=env, stdout=write_end, stderr=stderr.fileno())
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
            reader = os.fdopen(read_end, "rb")
    fd = reader.fileno()
    os.set_blocking(fd, False)
    buffer = b""
    eof = False
    next_check = 0.0

    def handle(line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.debug("ignoring a non-JSON line from the analysis process: %r", line[:200])
            return
        if not isinstance(message, dict):
            return
        event = message.get("event")
        if event == "progress":
            stage, fraction = str(message.get("stage", "")), message.get("fraction", 0.0)
            if isinstance(fraction, int | float):
                result.stages.append(stage)
                on_progress(stage, float(fraction))
        elif event == "error":
            result.error = child_error(message.get("code"), message.get("message"))
        elif event == "done":
            result.done = True

    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                if not eof:
                    if selector.select(timeout=poll_s):
                        try:
                            chunk = os.read(fd, 65536)
                        except BlockingIOError:
                            chunk = None
                        if chunk == b"":
                            eof = True
                        elif chunk:
                            buffer += chunk
                            *lines, buffer = buffer.split(b"\n")
                            for line in lines:
                                handle(line)
                            if len(buffer) > _MAX_LINE:
                                buffer = b""
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=poll_s)
                if eof and proc.poll() is not None:
                    break
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + poll_s
                    if _safe(should_cancel):
                        result.cancelled = True
                        break
                if now >= deadline:
                    result.timed_out = True
                    break
        if buffer:
            handle(buffer)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        result.returncode = proc.wait()
        reader.close()
        result.stderr_tail = _tail(stderr_path)
    return result


def child_error(code: object, message: object) -> JobError:
    """The error an analysis process reported, as the job will show it: a code of the expected
    form (else ``internal_error``) and the message as printable text of bounded length."""
    if not isinstance(code, str) or not _ERROR_CODE.match(code):
        code = "internal_error"
    text = "".join(ch if ch.isprintable() else " " for ch in str(message or ""))
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return JobError(code=code, message=text)


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception as exc:  # a Redis hiccup must not kill the job
        log.warning("cancel check failed: %s", exc)
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def outcome_error(result: ChildResult, limits: Limits) -> JobError | None:
    """Why the child failed, in words a person can act on; ``None`` when it succeeded."""
    if result.timed_out:
        return JobError(
            code="time_limit_exceeded",
            message=f"the analysis ran past the time limit of {limits.wall_s:g} s "
            "(NEURONSCOPE_JOB_TIME_LIMIT_S); use a smaller dataset, fewer pairs or fewer "
            "transition-density points",
        )
    if result.error is not None:
        return result.error
    rc = result.returncode
    if rc == 0 and result.done:
        return None
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc)
        if sig == signal.SIGXCPU:
            return JobError(
                code="cpu_time_limit_exceeded",
                message=f"the analysis used more than {limits.cpu_s} s of CPU time "
                "(NEURONSCOPE_JOB_CPU_TIME_LIMIT_S)",
            )
        if sig == signal.SIGKILL:
            return JobError(
                code="analysis_killed",
                message="the analysis process was killed (SIGKILL), most likely for running out of memory "
                "or CPU time; use a smaller dataset or batch_size",
            )
        if sig in _CRASH_SIGNALS:
            return JobError(
                code="analysis_crashed",
                message=f"the analysis process crashed ({sig.name}) while loading or running the model; "
                "the model file may be corrupt or use an operator the runtime cannot execute",
            )
        return JobError(code="analysis_crashed", message=f"the analysis process was stopped by {sig.name}")
    return JobError(
        code="analysis_crashed",
        message=f"the analysis process exited with status {rc} without a report",
    )


@dataclass(frozen=True)
class Confinement:
    """Whether this worker confines its analysis processes, and how (or why not)."""

    active: bool
    mechanism: str
    reason: str = ""

    def describe(self) -> str:
        return self.mechanism if self.active else f"none ({self.reason})"


def worker_confinement(settings: Settings) -> Confinement:
    """What confinement analysis processes get on this host (probed once per process, by
    confining a throw-away child for real), and whether it keeps the data directory out of reach."""
    found = host_confinement()
    mechanism = str(found.get("mechanism", "none"))
    if not found.get("active"):
        return Confinement(False, mechanism, str(found.get("error") or f"this host gives only {mechanism}"))
    exposed = exposing_root(default_paths([]), settings.data_dir)
    if exposed is not None:
        return Confinement(
            False,
            mechanism,
            f"the data directory {settings.data_dir} overlaps {exposed}, which analysis processes read; "
            "move NEURONSCOPE_DATA_DIR out of the Python installation and system directories",
        )
    return Confinement(True, mechanism)


def sandbox_refused(settings: Settings, confinement: Confinement, model_format: str) -> JobError | None:
    """``sandbox_unavailable`` for a model that is code where no confinement is active, unless the
    operator opted out (``NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED``)."""
    if model_format in CODE_FORMATS and not confinement.active and not settings.sandbox_allow_unconfined:
        return JobError(
            code="sandbox_unavailable",
            message=f"{model_format} models are code, and this worker cannot confine the process that "
            f"would run them: {confinement.reason}. Export the model to ONNX, or (trusted networks only) "
            "set NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true",
        )
    return None


@dataclass
class WorkerContext:
    """What a worker process needs to run jobs: settings, job records, storage, a Redis client."""

    settings: Settings
    jobs: JobStore
    storage: Storage
    leases: JobLeases
    redis_client: Redis | None = None
    confinement: Confinement | None = None

    def sandbox(self) -> Confinement:
        """This worker's confinement, probed on first use."""
        if self.confinement is None:
            self.confinement = worker_confinement(self.settings)
        return self.confinement

    @classmethod
    def of(cls, settings: Settings) -> WorkerContext:
        client = connect(settings.require_redis_url())
        if settings.launch == "fork":
            # it imports the libraries while the first job's inputs are fetched
            worker_zygote(settings.job_threads).start()
        confinement = worker_confinement(settings)
        log_confinement(confinement, settings)
        report_confinement(client, settings.key_prefix, confinement)
        return cls(
            confinement=confinement,
            settings=settings,
            jobs=JobStore(client, prefix=settings.key_prefix, ttl_s=settings.job_ttl_s),
            storage=open_storage(settings.storage_backend, settings.data_dir),
            leases=JobLeases(client, prefix=settings.key_prefix, ttl_s=settings.job_lease_s),
            redis_client=client,
        )

    def client(self) -> Redis:
        if self.redis_client is None:
            raise RuntimeError("this WorkerContext has no Redis client; build it with WorkerContext.of")
        return self.redis_client


def report_confinement(client: Redis, prefix: str, confinement: Confinement) -> None:
    """Tell the API (``/readyz``) what this host's analysis processes get; a Redis hiccup only
    delays the report."""
    try:
        publish(
            client,
            prefix,
            HostConfinement(this_host(), confinement.active, confinement.mechanism, confinement.reason),
        )
    except Exception as exc:
        log.warning("could not report this worker's confinement: %s", exc)


def log_confinement(confinement: Confinement, settings: Settings) -> None:
    if confinement.active:
        log.info("analysis processes are confined: %s", confinement.mechanism)
    elif settings.sandbox_allow_unconfined:
        log.warning(
            "analysis processes are NOT confined (%s) and NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true: "
            "PyTorch-format models run with this worker's access to files and network",
            confinement.reason,
        )
    else:
        log.warning(
            "analysis processes cannot be confined (%s): PyTorch-format jobs are refused "
            "(sandbox_unavailable); ONNX jobs run",
            confinement.reason,
        )


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


RunOutcome = Literal["succeeded", "failed", "cancelled", "skipped", "missing", "split", "leased"]


@dataclass(frozen=True)
class JobInputs:
    """A job's model, dataset and config, as private copies in its temporary directory."""

    workdir: Path
    model: Path
    dataset: Path
    config: Path


#: Decides whether a claimed job runs as one analysis (``None``) or starts a split one.
SplitHook = Callable[[JobRecord, JobInputs], RunOutcome | None]


class ArtifactTampered(Exception):
    """A stored artifact whose bytes no longer hash to its id."""


def private_copy(storage: Storage, kind: ArtifactKind, artifact_id: str, dest: Path) -> None:
    """Copy an artifact to ``dest`` as a file of its own (never a hard link to the stored bytes,
    which the analysis process could otherwise rewrite for every other job using them), checking
    on the way that the copy's sha256 is the artifact's id (ids are content hashes).

    Raises ``FileNotFoundError`` when it is gone and :class:`ArtifactTampered` (``dest`` removed)
    when its bytes changed since it was stored."""
    link = dest.with_name(dest.name + ".fetched")
    storage.fetch(kind, artifact_id, link)
    digest = hashlib.sha256()
    try:
        with open(link, "rb") as source, open(dest, "wb") as target:
            while block := source.read(1 << 20):
                digest.update(block)
                target.write(block)
    finally:
        link.unlink(missing_ok=True)
    if digest.hexdigest() != artifact_id:
        dest.unlink(missing_ok=True)
        raise ArtifactTampered(
            f"the stored {kind} {artifact_id[:12]}… no longer hashes to its id "
            f"(sha256 {digest.hexdigest()[:12]}…): it was changed after it was uploaded"
        )


def fetch_inputs(ctx: WorkerContext, record: JobRecord, workdir: Path) -> JobInputs:
    """The job's inputs copied into ``workdir``; ``FileSystemStorage`` raises FileNotFoundError."""
    inputs = JobInputs(
        workdir=workdir,
        model=workdir / f"model{_SUFFIX.get(record.model_format, '')}",
        dataset=workdir / f"dataset{_SUFFIX.get(record.dataset_format, '')}",
        config=workdir / "config.json",
    )
    private_copy(ctx.storage, "model", record.model_id, inputs.model)
    private_copy(ctx.storage, "dataset", record.dataset_id, inputs.dataset)
    inputs.config.write_text(record.config)
    return inputs


def torchscript_refused(ctx: WorkerContext, record: JobRecord) -> JobError | None:
    """The worker's own check of ``NEURONSCOPE_ALLOW_TORCHSCRIPT`` (the API checks it too)."""
    if record.model_format == "torchscript" and not ctx.settings.allow_torchscript:
        return JobError(
            code="torchscript_disabled",
            message="TorchScript models are switched off on this worker "
            "(NEURONSCOPE_ALLOW_TORCHSCRIPT=false); export the model to ONNX",
        )
    return None


def run_runner(
    ctx: WorkerContext,
    job_id: str,
    workdir: Path,
    args: list[str],
    *,
    python: str = sys.executable,
    on_progress: Callable[[str, float], None] | None = None,
    lease: HeldLease | None = None,
) -> tuple[ChildResult, JobError | None]:
    """Run ``python -m worker.runner ARGS`` for ``job_id`` in ``workdir`` under the job's limits,
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
        "-m", "worker.runner", *args,
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


def run_job(
    job_id: str, ctx: WorkerContext, *, python: str = sys.executable, split: SplitHook | None = None
) -> RunOutcome:
    """Run one job end to end; safe to call again for the same job (at-least-once delivery).

    While another attempt holds the job's lease (see ``neuronscope.job_lease``) nothing happens
    and the outcome is ``"leased"``: the caller checks again later. A finished job is left alone;
    a job whose report was stored by an earlier attempt is only marked succeeded; otherwise the
    analysis runs (again) in a fresh child process. ``split`` may take the job over instead (a
    large analysis split into parallel tasks): then the outcome is ``"split"`` and the job
    finishes later, elsewhere.
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
    job_id: str, ctx: WorkerContext, python: str, split: SplitHook | None, lease: HeldLease
) -> RunOutcome:
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
        if split is not None:
            outcome = split(record, inputs)
            if outcome is not None:
                return outcome
        report = inputs.workdir / "report.json"
        args = [
            "--model", str(inputs.model), "--dataset", str(inputs.dataset),
            "--config", str(inputs.config), "--report", str(report),
        ]  # fmt: skip
        log.info("job %s: attempt %d starting", job_id, record.attempts)
        result, error = run_runner(ctx, job_id, inputs.workdir, args, python=python, lease=lease)
        if lease.lost.is_set():
            return "leased"
        if result.cancelled:
            return "cancelled"
        if error is None:
            return store_report(ctx, job_id, report)
        return finish(ctx, job_id, "failed", error)


def store_report(ctx: WorkerContext, job_id: str, report: Path) -> RunOutcome:
    """Validate the report the child wrote, store it once and mark the job succeeded.

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
    return finish(ctx, job_id, "succeeded")


def finish(
    ctx: WorkerContext, job_id: str, status: Literal["succeeded", "failed"], error: JobError | None = None
) -> RunOutcome:
    """Move a running job to ``status``; a job cancelled meanwhile stays cancelled."""
    record = ctx.jobs.finish(job_id, status, error)
    if record is None:
        return "missing"
    log.info("job %s: %s%s", job_id, record.status, f" ({error.code}: {error.message})" if error else "")
    return "cancelled" if record.status == "cancelled" else status
