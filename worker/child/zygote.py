"""A warm launcher for analysis processes: one "zygote" per worker process, forking one child per job.

Starting ``python -m worker.child.runner`` costs seconds, almost all of it importing torch, onnxruntime,
onnx and the engine. The zygote is started once per worker process (``python -m worker.child.zygote``,
with the same scrubbed environment an analysis process gets), imports those modules, runs no
torch operation and starts no thread pool, then waits for requests on a private socket. For each
request it forks a child which, before anything else runs:

* starts its own session and process group (so a cancel or time-out kills the whole group);
* arranges to get SIGKILL when the zygote dies (``PR_SET_PDEATHSIG``), and the zygote kills its
  children and exits as soon as the worker process that started it is gone (its socket closes),
  so an analysis process still dies with its worker;
* takes the job's stdout (the protocol channel), stderr, working directory and environment
  (``os.environ`` is replaced as a whole: no ``REDIS_URL`` or ``NEURONSCOPE_*``), a fresh
  ``TMPDIR`` and fresh random seeds, and ``NEURONSCOPE_JOB_THREADS`` as ``torch.set_num_threads``;
* then runs ``-m MODULE ARGS`` (``worker.child.runner``, which sets its resource limits first) or
  ``-c CODE ARGS`` as Python would.

The zygote reports each child's pid and then its wait status on a per-child socket, so the
worker maps exits and signals to error codes exactly as for a process it started itself. A
zygote that died is started again on the next launch. See :class:`Zygote` (the worker's side).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

#: What the zygote imports before it forks; each child finds them in ``sys.modules``.
PRELOAD = (
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "neuronscope.contracts",
    "neuronscope.errors",
    "neuronscope.validation",
    "worker.engine.plan",
    "worker.engine",
    "worker.engine.stages",
    "worker.engine.capture.loader",
)
_PR_SET_PDEATHSIG = 1
_MAX_REQUEST = 4 * 1024 * 1024
#: How long a launch waits for the zygote to answer (it may still be importing torch).
START_TIMEOUT_S = 120.0


class ZygoteError(RuntimeError):
    """The zygote could not start a child (it did not start, or died twice in a row)."""


# --- the worker's side ---------------------------------------------------------------------------


class ForkedChild:
    """A child the zygote forked: ``poll``/``wait``/``kill`` like :class:`subprocess.Popen`.

    ``returncode`` follows Popen's convention (``-N`` for signal N). If the zygote dies before it
    reports, the child died with it (SIGKILL).
    """

    def __init__(self, pid: int, status: socket.socket, zygote_pid: int) -> None:
        self.pid = pid
        self.zygote_pid = zygote_pid
        self.returncode: int | None = None
        self._status = status

    def _read(self) -> None:
        try:
            message = self._status.recv(4096)
        except OSError:
            message = b""
        self._status.close()
        if not message:
            self.returncode = -signal.SIGKILL
            return
        self.returncode = os.waitstatus_to_exitcode(int(json.loads(message)["status"]))

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._status], [], [], 0)[0]:
            self._read()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._status], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"analysis process {self.pid}", timeout or 0.0)
            self._read()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)


class Zygote:
    """The worker process's zygote: started on first use, started again when it died."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the zygote unless it runs (returns at once; it imports in the background)."""
        with self._lock:
            if self.alive():
                return
            self._close_locked()
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "worker.child.zygote", "--fd", str(theirs.fileno())],
                    env=self.env,
                    cwd="/",
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                )
            except BaseException:
                mine.close()
                raise
            finally:
                theirs.close()
            self._sock = mine

    def close(self) -> None:
        """Stop the zygote (its running children die with it)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _forget(self) -> None:
        """In a forked copy of the worker process: drop the parent's zygote without touching it."""
        if self._sock is not None:
            self._sock.close()
        self._sock, self._proc, self._lock = None, None, threading.Lock()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdout: int,
        stderr: int,
        timeout_s: float = START_TIMEOUT_S,
    ) -> ForkedChild:
        """Fork a child running ``argv`` (``-m MODULE ...`` or ``-c CODE ...``) with ``stdout`` and
        ``stderr`` (file descriptors), in ``cwd`` with exactly ``env``."""
        payload = json.dumps({"argv": list(argv), "cwd": str(cwd), "env": dict(env)}).encode()
        if len(payload) > _MAX_REQUEST:
            raise ZygoteError("launch request too large")
        for _ in range(2):
            self.start()
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                with self._lock:
                    assert self._sock is not None and self._proc is not None
                    zygote_pid = self._proc.pid
                    socket.send_fds(self._sock, [payload], [stdout, stderr, theirs.fileno()])
            except OSError:
                mine.close()
                self.close()
                continue
            finally:
                theirs.close()
            if select.select([mine], [], [], timeout_s)[0]:
                with contextlib.suppress(OSError):
                    message = mine.recv(4096)
                    if message:
                        return ForkedChild(int(json.loads(message)["pid"]), mine, zygote_pid)
            mine.close()
            self.close()  # it died (or hangs): start a new one
        raise ZygoteError("the launcher process (zygote) did not start the analysis process")


#: Zygotes kept per process, one per launcher environment, least recently used first. A worker
#: process has one (its settings fix the environment); a process that launches with two thread
#: counts in turn (the test suite) keeps both warm instead of importing torch again at each switch.
MAX_ZYGOTES = 2
_zygotes: OrderedDict[tuple[tuple[str, str], ...], Zygote] = OrderedDict()
_zygote_lock = threading.Lock()


def get_zygote(env: Mapping[str, str]) -> Zygote:
    """This process's zygote for ``env`` (the scrubbed environment it starts with, on first use).

    Zygotes are kept by their whole environment (it is an allow-list: nothing of the caller's own
    environment is in it); past :data:`MAX_ZYGOTES` the least recently used one is stopped."""
    key = tuple(sorted(env.items()))
    with _zygote_lock:
        zygote = _zygotes.pop(key, None) or Zygote(env)
        _zygotes[key] = zygote
        while len(_zygotes) > MAX_ZYGOTES:
            _, oldest = _zygotes.popitem(last=False)
            oldest.close()
        return zygote


def _after_fork_in_child() -> None:
    global _zygote_lock
    _zygote_lock = threading.Lock()
    for zygote in _zygotes.values():
        zygote._forget()
    _zygotes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the zygote ----------------------------------------------------------------------------------


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the child imports it (and fails) itself
            sys.stderr.write(f"neuronscope zygote: could not preload {name}: {exc!r}\n")


def _die_with_parent(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _child(request: dict[str, Any], stdout: int, stderr: int, parent: int, close: list[int]) -> NoReturn:
    """In the forked child: become the job's analysis process and run it; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent(parent)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for source, target in ((devnull, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
            os.close(source)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        tempfile.tempdir = None  # TMPDIR is the job's now
        _fresh_state()
        code = _run(list(request["argv"]))
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        import traceback

        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _fresh_state() -> None:
    """What a fresh interpreter would have: own random seeds, the job's thread count."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def _run(argv: list[str]) -> int:
    """Run ``-m MODULE ARGS`` or ``-c CODE ARGS`` as ``__main__``; the exit status."""
    import runpy

    if len(argv) >= 2 and argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif len(argv) >= 2 and argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        raise SystemExit(f"worker.child.zygote: expected -m MODULE or -c CODE, got {argv[:1]}")
    return 0


def serve(control: socket.socket) -> NoReturn:
    """The zygote's loop: fork a child per request, report pids and wait statuses, and exit
    (killing the children) once the worker side of ``control`` is closed."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    me = os.getpid()
    children: dict[int, socket.socket] = {}

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            channel = children.pop(pid, None)
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.send(json.dumps({"status": status}).encode())
                channel.close()

    while True:
        ready = select.select([control.fileno(), wake_r], [], [])[0]
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            reap()
        if control.fileno() not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 3)
        except OSError:
            message, fds = b"", []
        if not message:  # the worker process is gone: so are its analyses
            for pid in children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            os._exit(0)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        stdout, stderr, status_fd = fds
        channel = socket.socket(fileno=status_fd)
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            os.close(stdout)
            os.close(stderr)
            channel.close()
            continue
        others = [control.fileno(), wake_r, wake_w, status_fd, *(c.fileno() for c in children.values())]
        pid = os.fork()
        if pid == 0:
            _child(request, stdout, stderr, me, others)
        os.close(stdout)
        os.close(stderr)
        children[pid] = channel
        with contextlib.suppress(OSError):
            channel.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str] | None = None) -> NoReturn:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m worker.child.zygote", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--fd", type=int, required=True, help="the control socket (SOCK_SEQPACKET)")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    _preload()
    serve(control)


if __name__ == "__main__":
    main()
