"""Settings hand themselves to subprocesses through the environment, exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neuronscope.settings import Settings


def test_to_env_round_trips_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        redis_url="redis://127.0.0.1:6390/2",
        data_dir=tmp_path,
        key_prefix="ns-test",
        queue="q1",
        job_threads=2,
        allow_torchscript=False,
        api_keys={"k" * 20: "alice", "m" * 20: "bob"},
        readyz_timeout_s=2.5,
        log_level="WARNING",
    )
    env = original.to_env()
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/2"
    assert env["NEURONSCOPE_ALLOW_TORCHSCRIPT"] == "false"
    for name in list(os.environ):
        if name.startswith("NEURONSCOPE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_to_env_leaves_unset_redis_out(tmp_path: Path) -> None:
    assert "REDIS_URL" not in Settings(redis_url=None, data_dir=tmp_path).to_env()
