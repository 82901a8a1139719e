"""Which warm launcher a launch gets: one zygote per launcher environment (the allow-listed one
``worker.child.environment.launcher_env`` builds), kept across changes of the caller's own environment and
across switches between thread counts; past ``MAX_ZYGOTES`` the least recently used one stops."""

from __future__ import annotations

from collections import OrderedDict

import pytest

import worker.child.zygote as zygote_module
from worker.child.environment import launcher_env, worker_zygote
from worker.child.zygote import MAX_ZYGOTES, get_zygote


def test_a_zygote_outlives_the_callers_environment_and_thread_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = worker_zygote(1)
    one.start()
    zero = worker_zygote(0)
    zero.start()
    pids = (one.pid, zero.pid)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "some other test (call)")
    monkeypatch.setenv("NEURONSCOPE_API_KEYS", "not-for-the-launcher")
    assert "PYTEST_CURRENT_TEST" not in launcher_env(1)
    for _ in range(3):  # switching back and forth starts nothing new
        assert worker_zygote(1) is one and worker_zygote(0) is zero
    assert one.alive() and zero.alive() and (one.pid, zero.pid) == pids


def test_past_the_limit_the_least_recently_used_zygote_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_ZYGOTES >= 2, "a worker and the test suite need two"
    monkeypatch.setattr(zygote_module, "_zygotes", OrderedDict())
    envs = [{"OMP_NUM_THREADS": str(n)} for n in range(MAX_ZYGOTES + 1)]
    first = get_zygote(envs[0])
    others = [get_zygote(env) for env in envs[1:MAX_ZYGOTES]]
    assert get_zygote(envs[0]) is first  # used again: now the most recent
    closed: list[int] = []
    for kept in others:
        monkeypatch.setattr(kept, "close", lambda kept=kept: closed.append(id(kept)))
    get_zygote(envs[MAX_ZYGOTES])
    assert closed == [id(others[0])]
    assert get_zygote(envs[0]) is first
    assert len(zygote_module._zygotes) == MAX_ZYGOTES
