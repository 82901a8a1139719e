"""Keep standalone mode's Celery worker running: restart it, with backoff, when it exits.

A worker that dies (``kill -9``, the OOM killer, a crash) would otherwise leave jobs queued forever
while the API still answers ``/healthz``. :class:`Supervisor` watches the process it started and,
when it exits without being asked to, logs the exit status, kills what is left of its process group
(orphaned pool processes) and starts a new one after a delay that doubles with each crash that came
soon after a start (``initial_backoff_s`` up to ``max_backoff_s``). After ``max_fast_crashes``
such crashes in a row it gives up with an error line: a worker that cannot start is not retried
forever. A worker that ran ``stable_s`` or longer before exiting resets the count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("neuronscope.standalone")


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart: backoff doubling from ``initial_backoff_s`` to ``max_backoff_s``; give up
    after ``max_fast_crashes`` exits in a row each less than ``stable_s`` after its start."""

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_s: float = 60.0
    max_fast_crashes: int = 5

    def backoff_s(self, fast_crashes: int) -> float:
        """The delay before the next start after ``fast_crashes`` (≥ 0) quick crashes in a row."""
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, fast_crashes - 1)))


DEFAULT_POLICY = RestartPolicy()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a dead leader's process group (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Supervisor:
    """Runs ``start()`` (a process in a new session) and restarts it when it exits unexpectedly.

    ``watch()`` runs the loop (in a thread); ``stop(halt)`` ends it and stops the current process
    with ``halt(proc)``. ``starts`` counts the processes started, ``gave_up`` says the loop ended
    because the process kept crashing.
    """

    def __init__(
        self,
        start: Callable[[], subprocess.Popen[bytes]],
        name: str,
        log_hint: str,
        policy: RestartPolicy = DEFAULT_POLICY,
        poll_s: float = 0.5,
    ) -> None:
        self._start = start
        self._name = name
        self._hint = log_hint
        self._policy = policy
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.gave_up = False
        self.starts = 0
        self.proc = self._launch()

    def _launch(self) -> subprocess.Popen[bytes]:
        proc = self._start()
        self.starts += 1
        return proc

    def watch(self) -> None:
        """Restart the process each time it exits, until ``stop()`` or until it keeps crashing."""
        fast_crashes = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            status = self.proc.poll()
            if status is None:
                self._stopping.wait(self._poll_s)
                continue
            if self._stopping.is_set():
                return
            _kill_group(self.proc)
            ran_s = time.monotonic() - started
            fast_crashes = fast_crashes + 1 if ran_s < self._policy.stable_s else 1
            if fast_crashes >= self._policy.max_fast_crashes:
                self.gave_up = True
                log.error(
                    "%s exited with status %s %.1f s after it started; it crashed %d times in a row "
                    "within %g s of starting, so it is not restarted again: no jobs run until "
                    "neuronscope serve is restarted; see %s",
                    self._name, status, ran_s, fast_crashes, self._policy.stable_s, self._hint,
                )  # fmt: skip
                return
            delay = self._policy.backoff_s(fast_crashes)
            log.error(
                "%s exited unexpectedly with status %s %.1f s after it started; restarting it in %g s "
                "(crash %d of at most %d in a row); see %s",
                self._name, status, ran_s, delay, fast_crashes, self._policy.max_fast_crashes, self._hint,
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._launch()
                started = time.monotonic()
            log.info("%s restarted (pid %d)", self._name, self.proc.pid)

    def stop(self, halt: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """End the loop, then ``halt`` the current process (no restart can start after this)."""
        self._stopping.set()
        with self._lock:
            halt(self.proc)
