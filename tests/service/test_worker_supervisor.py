"""``service.worker_supervisor`` with real processes: a killed process is restarted, one that keeps
crashing is given up on with an error line, and nothing is restarted after ``stop``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from service.worker_supervisor import RestartPolicy, Supervisor

QUICK = RestartPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, stable_s=30.0, max_fast_crashes=3)


def starter(code: str) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    return start


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def halt(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=5.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_killed_process_is_restarted_and_not_after_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "neuronscope.standalone")
    supervisor = Supervisor(starter("import time; time.sleep(120)"), "worker", "worker.log", QUICK, 0.05)
    watcher = threading.Thread(target=supervisor.watch, daemon=True)
    watcher.start()
    first = supervisor.proc
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: supervisor.proc is not first)
    second = supervisor.proc
    assert first.wait(timeout=5) == -signal.SIGKILL and second.poll() is None
    assert supervisor.starts == 2 and not supervisor.gave_up
    assert any(
        "worker exited unexpectedly with status -9" in r.getMessage() and "restarting" in r.getMessage()
        for r in caplog.records
    )

    supervisor.stop(halt)
    watcher.join(timeout=5)
    assert not watcher.is_alive()
    assert second.poll() is not None and supervisor.proc is second and supervisor.starts == 2


def test_a_process_that_keeps_crashing_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "neuronscope.standalone")
    supervisor = Supervisor(starter("raise SystemExit(3)"), "worker", "worker.log", QUICK, 0.05)
    watcher = threading.Thread(target=supervisor.watch, daemon=True)
    watcher.start()
    watcher.join(timeout=20)
    assert not watcher.is_alive() and supervisor.gave_up
    assert supervisor.starts == QUICK.max_fast_crashes
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == QUICK.max_fast_crashes
    assert "crashed 3 times in a row" in errors[-1] and "not restarted again" in errors[-1]
    assert "worker.log" in errors[-1]
