"""Launching an analysis process and following it: its JSON-lines channel, its limits, its exit.

The child runs in its own process group, so a cancel or a time-out kills it and everything it
started. Whatever it does (a segfault, running out of memory, hanging), the caller only sees an
exit status and an error with a code a person can act on; what the child says is bounded.
By default the child is forked from the worker process's warm launcher (:mod:`worker.child.zygote`);
with ``exec`` or a sandbox command it is a fresh ``python -m worker.child.runner``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from neuronscope.jobs import JobError
from neuronscope.settings import Settings
from worker.child.zygote import Zygote

log = logging.getLogger("neuronscope.worker")

_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


_MAX_LINE = 1024 * 1024


#: What an error reported by the analysis process may look like: its code, and its message cut to
#: printable characters and this length (the process runs the uploaded model).
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


MAX_ERROR_MESSAGE_CHARS = 500


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
