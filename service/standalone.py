"""Standalone mode: the API, a worker and (without ``REDIS_URL``) a private Redis on one machine.

``serve()`` is what ``neuronscope serve`` runs. Without ``REDIS_URL`` it starts ``redis-server``
on a free loopback port with a random password and an append-only file under
``data_dir/redis`` (so queued jobs and job records survive a restart), a Celery worker
subprocess (restarted with backoff when it dies, given up on with an error line when it keeps
crashing: ``service.worker_supervisor``), and uvicorn in this process; on SIGINT/SIGTERM it stops
uvicorn, then the worker
(a job still running is requeued and runs again on the next start), then Redis. With
``REDIS_URL`` set it serves only the API: the workers run elsewhere.

If no ``redis-server`` binary is installed, ``fakeredis``'s TCP server (in this process, nothing
persisted) stands in when ``fakeredis[lua]`` is installed; otherwise ``serve`` stops
with a message saying how to install either.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import redis

from neuronscope.errors import NeuronscopeError
from neuronscope.settings import Settings, get_settings
from service.worker_supervisor import DEFAULT_POLICY, RestartPolicy, Supervisor

log = logging.getLogger("neuronscope.standalone")

INSTALL_REDIS_HINT = (
    "no redis-server found: install Redis (Debian/Ubuntu: `apt-get install redis-server`, macOS: "
    "`brew install redis`), or `pip install 'fakeredis[lua]'` for an in-process stand-in that keeps "
    "nothing across restarts, or point REDIS_URL at a Redis server"
)


class StandaloneError(NeuronscopeError):
    code = "standalone_failed"


class _Stop(Exception):
    """Raised by the SIGTERM handler while the services are starting or stopping."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_redis(url: str, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if proc is not None and proc.poll() is not None:
                    raise StandaloneError(f"redis-server exited with status {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise StandaloneError(f"Redis at {url} did not answer within {timeout_s:g} s") from None
                time.sleep(0.05)
    finally:
        client.close()


def _stop_process(proc: subprocess.Popen[bytes], name: str, signals: list[tuple[int, float]]) -> None:
    """Send each signal in turn, waiting up to its timeout for ``proc`` to exit; then SIGKILL."""
    for sig, timeout_s in signals:
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    if proc.poll() is None:
        log.warning("%s did not stop; killing it", name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def private_redis(data_dir: Path, log_path: Path) -> Iterator[str]:
    """A Redis for this machine only; yields its URL and shuts it down (persisting) on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        with _fakeredis_server() as url:
            yield url
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    for attempt in range(3):
        port = free_port()
        conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{data_dir}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                f"requirepass {password}",
                "protected-mode yes",
                "daemonize no",
                f'logfile "{log_path}"',
            ]
        )
        conf_path = data_dir / "redis.conf"
        conf_path.write_text(conf + "\n")
        conf_path.chmod(0o600)
        proc = subprocess.Popen(
            [binary, str(conf_path)], stdin=subprocess.DEVNULL, start_new_session=True, cwd=data_dir
        )
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        try:
            wait_for_redis(url, proc=proc)
        except StandaloneError:
            _stop_process(proc, "redis-server", [(signal.SIGTERM, 5.0)])
            if attempt == 2:
                raise StandaloneError(f"redis-server did not start; see {log_path}") from None
            continue
        log.info("private Redis on 127.0.0.1:%d (data in %s)", port, data_dir)
        try:
            yield url
        finally:
            _stop_process(proc, "redis-server", [(signal.SIGTERM, 10.0)])
        return


@contextmanager
def _fakeredis_server() -> Iterator[str]:
    if importlib.util.find_spec("lupa") is None:  # Celery's Redis transport runs Lua scripts
        raise StandaloneError(INSTALL_REDIS_HINT)
    try:
        from fakeredis import TcpFakeServer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise StandaloneError(INSTALL_REDIS_HINT) from None
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    log.warning("no redis-server found: using fakeredis in this process (nothing survives a restart)")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url
    finally:
        server.shutdown()
        server.server_close()


def worker_command(settings: Settings, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "--queues", settings.queue, "--loglevel", settings.log_level,
        "--hostname", f"standalone-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings."""
    settings.require_redis_url()
    return {**os.environ, **settings.to_env()}


@contextmanager
def worker_process(
    settings: Settings, concurrency: int, log_path: Path, policy: RestartPolicy = DEFAULT_POLICY
) -> Iterator[Supervisor]:
    """A supervised Celery worker subprocess, restarted when it dies (``service.worker_supervisor``);
    on exit stopped warm (SIGTERM), then cold (SIGQUIT), then killed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = settings_env(settings)

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                worker_command(settings, concurrency),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("worker started (pid %d, concurrency %d, log %s)", proc.pid, concurrency, log_path)
        return proc

    supervisor = Supervisor(start, "worker", str(log_path), policy)
    watcher = threading.Thread(target=supervisor.watch, name="worker-supervisor", daemon=True)
    watcher.start()
    try:
        yield supervisor
    finally:
        supervisor.stop(
            lambda proc: _stop_process(proc, "worker", [(signal.SIGTERM, 10.0), (signal.SIGQUIT, 5.0)])
        )
        watcher.join(timeout=5.0)


def serve(host: str, port: int, data_dir: Path, workers: int = 1) -> None:
    """Serve the API on ``host:port`` with storage under ``data_dir``, until SIGINT or SIGTERM.

    Without ``REDIS_URL``: also a private Redis and a worker with ``workers`` processes.
    """
    import uvicorn

    from service.main import create_app
    from service.server import uvicorn_config

    if workers < 1:
        raise StandaloneError(f"workers: expected at least 1, got {workers}")
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    base = get_settings()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with ExitStack() as stack:
            if base.redis_url is None:
                url = stack.enter_context(private_redis(data_dir / "redis", logs / "redis.log"))
                settings = base.model_copy(update={"redis_url": url, "data_dir": data_dir})
                stack.enter_context(worker_process(settings, workers, logs / "worker.log"))
            else:
                settings = base.model_copy(update={"data_dir": data_dir})
                log.info(
                    "REDIS_URL is set: serving the API only; "
                    "run workers with `celery -A worker.celery_app worker`"
                )
            # Stopping (innermost first): ignore further SIGINT/SIGTERM so the shutdown completes.
            stack.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)
            stack.callback(signal.signal, signal.SIGTERM, signal.SIG_IGN)
            server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host=host, port=port))
            server.run()
    except (KeyboardInterrupt, _Stop):
        log.info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
