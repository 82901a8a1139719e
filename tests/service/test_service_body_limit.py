"""Request bodies are limited while they stream in, against a real uvicorn server on a loopback port:
a chunked upload (no Content-Length) far past the limit is answered 413 once the limit is passed,
the server stops reading, and it never writes more than the limit to disk. An unauthenticated body
is not read at all."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_testlib import ALICE_KEY, assert_error, auth
from fastapi.testclient import TestClient

from neuronscope.settings import Settings
from service.main import create_app
from service.middleware import FORM_OVERHEAD_BYTES, body_limit

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
ATTEMPT_BYTES = 256 * MIB  # what the client tries to send
CHUNK = 64 * 1024

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/PID/io")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    settings: Settings
    tmpdir: Path
    log: Path

    def written(self) -> int:
        """Bytes the server process has passed to write() so far (files, sockets, logs)."""
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
        raise AssertionError("no wchar in /proc/PID/io")

    def leftovers(self) -> list[Path]:
        return [*self.tmpdir.iterdir(), *(self.settings.data_dir / "tmp").iterdir()]


@pytest.fixture(scope="module")
def server(make_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings: Settings = make_settings(max_upload_mb=1, api_keys={ALICE_KEY: "alice"})
    tmpdir = tmp_path_factory.mktemp("server-tmp")
    log = tmpdir.parent / f"{tmpdir.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    env |= settings.to_env() | {
        "TMPDIR": str(tmpdir),  # where Starlette spools multipart files
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
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
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Server(url, proc, settings, tmpdir, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Body:
    """A multipart dataset upload produced chunk by chunk, counting what the client got to send."""

    payload: Iterator[bytes]
    sent: int = 0
    boundary: str = "neuronscope-test-boundary"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers["Content-Type"] = f"multipart/form-data; boundary={self.boundary}"

    def __iter__(self) -> Iterator[bytes]:
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.npy"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for chunk in (head, *self.payload, f"\r\n--{self.boundary}--\r\n".encode()):
            self.sent += len(chunk)
            yield chunk


def zeros(total: int) -> Iterator[bytes]:
    yield b"\x93NUMPY"
    for _ in range(total // CHUNK):
        yield b"\0" * CHUNK


def post_chunked(server: Server, body: Body, headers: dict[str, str]) -> tuple[httpx.Response, int]:
    before = server.written()
    response = httpx.post(
        f"{server.url}/v1/datasets", content=iter(body), headers=body.headers | headers, timeout=60
    )
    return response, server.written() - before


def test_a_chunked_upload_past_the_limit_is_cut_off_at_the_limit(server: Server) -> None:
    limit = body_limit(server.settings, "POST", "/v1/datasets")
    assert limit == 1 * MIB + FORM_OVERHEAD_BYTES
    body = Body(zeros(ATTEMPT_BYTES))
    response, written = post_chunked(server, body, auth(ALICE_KEY))
    detail = assert_error(response, 413, "payload_too_large")["detail"]
    assert str(limit) in detail
    assert "content-length" not in {k.lower() for k in response.request.headers}  # it was chunked
    # The server stopped reading: the client got only socket buffers' worth past the limit ...
    assert body.sent < 32 * MIB, body.sent
    # ... and wrote (spooled) no more than the limit.
    assert written <= limit + 64 * 1024, written
    assert server.leftovers() == []
    assert not list((server.settings.data_dir / "artifacts").rglob("*.bin"))


def test_a_declared_content_length_past_the_limit_is_refused_unread(server: Server) -> None:
    data = b"\x93NUMPY" + b"\0" * (3 * MIB)
    before = server.written()
    response = httpx.post(
        f"{server.url}/v1/datasets", files={"file": ("d.npy", data)}, headers=auth(ALICE_KEY), timeout=60
    )
    assert_error(response, 413, "payload_too_large")
    assert server.written() - before < 64 * 1024
    assert server.leftovers() == []


def test_an_unauthenticated_body_is_not_read(server: Server) -> None:
    body = Body(zeros(ATTEMPT_BYTES))
    response, written = post_chunked(server, body, {})
    assert_error(response, 401, "unauthorized")
    assert body.sent < 32 * MIB and written < 64 * 1024
    assert server.leftovers() == []


def test_a_chunked_upload_within_the_limit_is_stored(server: Server) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ones((4096, 48), dtype=np.float32))  # 768 KiB
    data = buf.getvalue()
    assert 512 * 1024 < len(data) < MIB
    body = Body(iter([data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]))
    response, _ = post_chunked(server, body, auth(ALICE_KEY))
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(data)
    assert server.leftovers() == []


# -- per-route limits, in process ----------------------------------------------------------------


def test_each_route_has_its_own_limit(make_settings: Any) -> None:
    settings = make_settings(max_upload_mb=1)
    assert body_limit(settings, "POST", "/v1/analyze") == 2 * MIB + FORM_OVERHEAD_BYTES
    assert body_limit(settings, "GET", "/v1/jobs") == FORM_OVERHEAD_BYTES
    with TestClient(create_app(settings)) as client:
        big = b"\0" * (FORM_OVERHEAD_BYTES + 1)
        assert_error(client.request("GET", "/v1/jobs", content=big), 413, "payload_too_large")
        assert_error(client.request("DELETE", "/v1/jobs/x", content=big), 413, "payload_too_large")
        # Two files of almost a MiB each fit /v1/analyze (they are then checked, and refused, as files).
        files = {"model": ("m.onnx", b"\1" * (MIB - 10)), "dataset": ("d.npz", b"\2" * (MIB - 10))}
        assert client.post("/v1/analyze", files=files).status_code == 422
        # One file past the per-file limit inside the body limit: the per-file check answers.
        one = client.post("/v1/datasets", files={"file": ("d.npy", b"\x93NUMPY" + b"\0" * MIB)})
        assert "NEURONSCOPE_MAX_UPLOAD_MB" in assert_error(one, 413, "payload_too_large")["detail"]
        assert_error(
            client.post("/v1/datasets", files={"file": ("d.npy", b"\0" * (2 * MIB + 1))}),
            413,
            "payload_too_large",
        )
