"""``NEURONSCOPE_REQUIRE_API_KEYS=true`` (set on the API in docker-compose.yml): a real API process
without API keys stops at start-up with a message saying how to set them and never answers on its
port; with keys it serves, and only to clients that present one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from neuronscope.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3y-for-the-test-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_process(command: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    env |= {"PYTHONPATH": str(ROOT), "NEURONSCOPE_DATA_DIR": str(tmp_path / "data")} | env_extra
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def commands(port: int) -> list[list[str]]:
    return [
        ["-m", "service.server", "--host", "127.0.0.1", "--port", str(port)],
        ["-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
    ]


@pytest.mark.parametrize("launcher", [0, 1], ids=["service.server", "uvicorn"])
def test_the_api_refuses_to_start_without_keys_when_they_are_required(
    tmp_path: Path, redis_server: Any, launcher: int
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_server.url, "NEURONSCOPE_REQUIRE_API_KEYS": "true"}
    proc = api_process(commands(port)[launcher], env, tmp_path)
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "NEURONSCOPE_REQUIRE_API_KEYS is true" in output and "NEURONSCOPE_API_KEYS is empty" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_with_keys_the_api_serves_only_clients_that_present_one(tmp_path: Path, redis_server: Any) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": redis_server.url,
        "NEURONSCOPE_KEY_PREFIX": "require-keys",
        "NEURONSCOPE_REQUIRE_API_KEYS": "true",
        "NEURONSCOPE_API_KEYS": f"{KEY}:team",
    }
    proc = api_process(commands(port)[0], env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        anonymous = httpx.get(base + "/v1/jobs", timeout=5)
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
        allowed = httpx.get(base + "/v1/jobs", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert allowed.status_code == 200, allowed.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_setting_refuses_empty_keys_without_printing_input() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(require_api_keys=True, api_keys={})
    assert "NEURONSCOPE_API_KEYS is empty" in str(caught.value)
    assert Settings(require_api_keys=True, api_keys={KEY: "team"}).api_keys == {KEY: "team"}
    assert Settings().require_api_keys is False
