"""Request limits, attacked for real against ``python -m service.server`` (the launcher that
``neuronscope serve`` shares) on a loopback port, on the session's real Redis:

- a 64 MiB header is cut off after one head's worth of bytes while other clients' ``/healthz``
  keeps answering (before: the server read all of it and ``/healthz`` stalled for ~6 s);
- a head over ``max_header_bytes`` or with more than ``max_headers`` fields is 431;
- a head or a body that stalls is answered 408 and closed (before: held open forever);
- requests past ``max_concurrent_requests`` are 503 while health probes still answer.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_testlib import ALICE_KEY, assert_error, auth
from fastapi.testclient import TestClient

from neuronscope.settings import Settings
from service.http_protocol import LimitedHttpToolsProtocol
from service.main import create_app
from service.server import uvicorn_config

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
TIMEOUT_S = 2.0  # the server's header and body read timeouts
CONCURRENCY = 3

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/PID/io")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    settings: Settings
    tmpdir: Path

    def read(self) -> int:
        """Bytes the server process has read so far (sockets, files)."""
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise AssertionError("no rchar in /proc/PID/io")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def leftovers(self) -> list[Path]:
        return [*self.tmpdir.iterdir(), *(self.settings.data_dir / "tmp").iterdir()]


@contextmanager
def serving(command: list[str], settings: Settings, tmpdir: Path) -> Iterator[Server]:
    """``python -m COMMAND --host 127.0.0.1 --port PORT`` with ``settings``, until it answers."""
    log = tmpdir.parent / f"{tmpdir.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    env |= settings.to_env() | {"TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Server(url, port, proc, settings, tmpdir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(make_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings: Settings = make_settings(
        max_upload_mb=1,
        api_keys={ALICE_KEY: "alice"},
        header_read_timeout_s=TIMEOUT_S,
        body_read_timeout_s=TIMEOUT_S,
        max_concurrent_requests=CONCURRENCY,
    )
    assert settings.max_header_bytes == 64 * 1024 and settings.max_headers == 100  # the defaults
    command = ["service.server", "--no-access-log"]
    with serving(command, settings, tmp_path_factory.mktemp("server-tmp")) as running:
        yield running


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float  # from when reading began to the end of the connection

    def error(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def read_answer(sock: socket.socket) -> Answer:
    """Everything the server sends until it closes the connection, as status and body."""
    start = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return Answer(status, body, time.monotonic() - start)


def request_head(path: str, headers: list[tuple[str, str]], method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def npy_bytes(rows: int = 256, cols: int = 48) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((rows, cols), dtype=np.float32))
    return buf.getvalue()


def upload_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A multipart ``POST /v1/datasets`` as (request head, body start, body rest)."""
    boundary = "neuronscope-test-boundary"
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.npy"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data
    end = f"\r\n--{boundary}--\r\n".encode()
    head = request_head(
        "/v1/datasets",
        [
            ("Host", "localhost"),
            ("Authorization", f"Bearer {ALICE_KEY}"),
            ("Content-Type", f"multipart/form-data; boundary={boundary}"),
            ("Content-Length", str(len(start) + len(end))),
            ("Connection", "close"),
        ],
        method="POST",
    )
    half = len(start) // 2
    return head, start[:half], start[half:] + end


# -- request head size -------------------------------------------------------------------------


def test_a_64_mib_header_is_cut_off_while_other_clients_are_served(server: Server) -> None:
    attempt = 64 * MIB
    outcome: dict[str, Any] = {}

    def attack() -> None:
        sent = 0
        with server.connect() as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
                piece = b"a" * MIB
                while sent < attempt:
                    sock.sendall(piece)
                    sent += len(piece)
                sock.sendall(b"\r\n\r\n")
                outcome["answer"] = read_answer(sock)
            except OSError as exc:  # reset or broken pipe: the server closed on us
                outcome["error"] = exc
        outcome["sent"] = sent

    read_before = server.read()
    attacker = threading.Thread(target=attack)
    attacker.start()
    latencies: list[float] = []
    with httpx.Client(timeout=30) as client:
        while attacker.is_alive() or len(latencies) < 5:
            start = time.monotonic()
            assert client.get(f"{server.url}/healthz").status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.05)
    attacker.join()

    # The server stopped reading after about one head's worth (it read 64 MiB before) ...
    assert server.read() - read_before < 2 * MIB, server.read() - read_before
    assert outcome["sent"] < attempt  # ... so the client could not even send it all ...
    if "answer" in outcome:  # ... and either read the 431 or saw the connection reset.
        assert outcome["answer"].status == 431
    else:
        assert isinstance(outcome["error"], (ConnectionResetError, BrokenPipeError)), outcome
    # Others were served meanwhile (before: one /healthz waited ~6 s on this machine).
    assert max(latencies) < 3.0, latencies


def test_a_head_over_the_limit_is_431_and_one_within_it_is_served(server: Server) -> None:
    limit = server.settings.max_header_bytes
    for size, status in ((4 * limit, 431), (limit - 4096, 200)):
        with server.connect() as sock:
            sock.sendall(
                request_head(
                    "/healthz", [("Host", "localhost"), ("Connection", "close"), ("X-Pad", "p" * size)]
                )
            )
            answer = read_answer(sock)
        assert answer.status == status, (size, answer)
        if status == 431:
            error = answer.error()
            assert error["error"] == "request_headers_too_large"
            assert str(limit) in error["detail"] and "NEURONSCOPE_MAX_HEADER_BYTES" in error["detail"]
            assert "the rest was not read" in error["detail"]  # refused by the protocol, unparsed


def test_more_header_fields_than_the_limit_is_431(server: Server) -> None:
    limit = server.settings.max_headers
    for count, status in ((limit + 1, 431), (limit, 200)):
        headers = [("Host", "localhost"), ("Connection", "close")]
        headers += [(f"X-H{i}", "v") for i in range(count - len(headers))]
        with server.connect() as sock:
            sock.sendall(request_head("/healthz", headers))
            answer = read_answer(sock)
        assert answer.status == status, (count, answer)
        if status == 431:
            error = answer.error()
            assert error["error"] == "request_headers_too_large"
            assert f"at most {limit} header fields" in error["detail"] and f"got {count}" in error["detail"]


def test_the_app_refuses_too_many_header_fields_however_it_is_served(make_settings: Any) -> None:
    settings = make_settings()
    extra = {f"X-H{i}": "v" for i in range(settings.max_headers)}
    with TestClient(create_app(settings)) as client:
        assert_error(client.get("/healthz", headers=extra), 431, "request_headers_too_large")
        big = {"X-Pad": "p" * settings.max_header_bytes}
        assert_error(client.get("/healthz", headers=big), 431, "request_headers_too_large")
        assert client.get("/healthz").status_code == 200


def test_neuronscope_serve_has_the_head_limits(make_settings: Any, tmp_path: Path) -> None:
    # REDIS_URL set: `neuronscope serve` runs only the API, through the same uvicorn configuration.
    settings = make_settings(header_read_timeout_s=TIMEOUT_S)
    command = ["neuronscope.cli", "serve", "--data-dir", str(settings.data_dir)]
    with serving(command, settings, tmp_path) as served:
        with served.connect() as sock:
            pad = "p" * 4 * settings.max_header_bytes
            sock.sendall(request_head("/healthz", [("Host", "localhost"), ("X-Pad", pad)]))
            big = read_answer(sock)
        with served.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            slow = read_answer(sock)
    assert big.status == 431 and "the rest was not read" in big.error()["detail"], big
    assert slow.status == 408 and slow.error()["error"] == "header_read_timeout", slow


def test_the_launchers_put_the_head_limits_in_front_of_the_app(make_settings: Any) -> None:
    settings = make_settings(max_header_bytes=8192, header_read_timeout_s=3.5)
    config = uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=0)
    config.load()
    protocol = config.http_protocol_class
    assert isinstance(protocol, type) and issubclass(protocol, LimitedHttpToolsProtocol)
    assert (protocol.max_head_bytes, protocol.head_timeout_s) == (8192, 3.5)


# -- read timeouts -----------------------------------------------------------------------------


def test_a_head_that_stalls_is_answered_408_and_closed(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        answer = read_answer(sock)
    assert answer.status == 408, answer
    assert answer.error()["error"] == "header_read_timeout"
    assert "NEURONSCOPE_HEADER_READ_TIMEOUT_S" in answer.error()["detail"]
    assert TIMEOUT_S - 0.5 < answer.seconds < TIMEOUT_S + 5, answer.seconds
    # A connection that never sends a byte is closed quietly after the same time.
    with server.connect() as sock:
        silent = read_answer(sock)
    assert silent.status == 0 and silent.body == b""
    assert TIMEOUT_S - 0.5 < silent.seconds < TIMEOUT_S + 5, silent.seconds


def test_a_stalled_upload_is_answered_408_closed_and_nothing_is_stored(server: Server) -> None:
    head, start, _ = upload_parts(npy_bytes())
    with server.connect() as sock:
        sock.sendall(head + start)  # ... and then nothing
        answer = read_answer(sock)
    assert answer.status == 408, answer
    error = answer.error()
    assert error["error"] == "body_read_timeout"
    assert (
        f"within {TIMEOUT_S:g} s" in error["detail"] and "NEURONSCOPE_BODY_READ_TIMEOUT_S" in error["detail"]
    )
    assert TIMEOUT_S - 0.5 < answer.seconds < TIMEOUT_S + 5, answer.seconds
    assert server.leftovers() == []
    assert not list((server.settings.data_dir / "artifacts").rglob("*.bin"))


def test_an_upload_that_keeps_coming_is_not_cut_off(server: Server) -> None:
    data = npy_bytes()
    head, start, rest = upload_parts(data)
    pieces = [rest[i : i + len(rest) // 3 + 1] for i in range(0, len(rest), len(rest) // 3 + 1)]
    began = time.monotonic()
    with server.connect() as sock:
        sock.sendall(head + start)
        for piece in pieces:  # each pause well within the timeout, all of them together past it
            time.sleep(TIMEOUT_S * 0.4)
            sock.sendall(piece)
        answer = read_answer(sock)
    assert time.monotonic() - began > TIMEOUT_S
    assert answer.status == 201, answer
    assert json.loads(answer.body)["size"] == len(data)


# -- concurrency ---------------------------------------------------------------------------------


def test_requests_past_the_concurrency_limit_are_503_while_probes_answer(server: Server) -> None:
    head, start, _ = upload_parts(npy_bytes())
    stalled = [server.connect() for _ in range(CONCURRENCY)]
    try:
        for sock in stalled:  # each holds a request in progress until its body times out
            sock.sendall(head + start)
        time.sleep(0.3)
        with httpx.Client(timeout=10) as client:
            busy = client.get(f"{server.url}/v1/jobs", headers=auth(ALICE_KEY))
            detail = assert_error(busy, 503, "server_busy")["detail"]
            assert f"fewer than {CONCURRENCY}" in detail and "NEURONSCOPE_MAX_CONCURRENT_REQUESTS" in detail
            assert busy.headers["retry-after"] == "1"
            assert client.get(f"{server.url}/healthz").status_code == 200
            assert client.get(f"{server.url}/readyz").status_code in (200, 503)  # answered, not refused
            assert "server_busy" not in client.get(f"{server.url}/readyz").text
            assert [read_answer(sock).status for sock in stalled] == [408] * CONCURRENCY
            assert client.get(f"{server.url}/v1/jobs", headers=auth(ALICE_KEY)).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
