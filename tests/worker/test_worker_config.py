"""The workers' Celery configuration: redelivery timing, the chord backend, the tasks' delivery
guarantees, and the queue, sandbox and split groups of the one settings object."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from neuronscope.settings import Settings
from worker.celery_app import create_celery


def test_redelivery_waits_past_the_hard_time_limit_by_default(settings: Settings) -> None:
    conf = create_celery(settings).conf
    options = conf.broker_transport_options
    assert settings.visibility_timeout_s is None
    assert options["visibility_timeout"] == settings.redelivery_after_s > conf.task_time_limit
    published = settings.celery_config()["broker_transport_options"]
    assert published["visibility_timeout"] == settings.redelivery_after_s
    assert options["unacked_restore_interval"] == 60 and options["unacked_restore_throttle"] == 1
    assert options["global_keyprefix"] == f"{settings.key_prefix}:celery:"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    # chords count their finished parts in Redis, under the deployment's prefix
    assert conf.result_backend == settings.redis_url
    assert conf.result_backend_transport_options == {"global_keyprefix": f"{settings.key_prefix}:celery:"}


def test_the_visibility_timeout_can_be_lowered_and_sweeps_follow_it(make_settings: Any) -> None:
    """One value for the API that publishes and the workers that consume."""
    settings = make_settings(visibility_timeout_s=5)
    options = create_celery(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == 5 and options["unacked_restore_interval"] == 1
    assert settings.celery_config()["broker_transport_options"]["visibility_timeout"] == 5


def test_worker_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONSCOPE_VISIBILITY_TIMEOUT_S", "30")
    monkeypatch.setenv("NEURONSCOPE_SANDBOX_COMMAND", "bwrap --die-with-parent --ro-bind / / --")
    monkeypatch.setenv("NEURONSCOPE_CHUNK_TD_POINTS", "0")
    settings = Settings()
    assert settings.visibility_timeout_s == 30 and settings.chunk_td_points == 0
    assert settings.redelivery_after_s == 30
    assert settings.sandbox_prefix == ["bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--"]
    with pytest.raises(ValidationError, match="shell-quoted"):
        Settings(sandbox_command="nsjail '--unclosed")
    with pytest.raises(ValidationError):
        Settings(visibility_timeout_s=0)


def test_every_task_is_acknowledged_late_and_requeued_when_its_worker_dies(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.tasks  # registers the tasks
    from neuronscope.settings import get_settings
    from worker.celery_app import app

    monkeypatch.setenv("REDIS_URL", settings.require_redis_url())
    get_settings.cache_clear()
    try:
        for name in ("analysis.run", worker.tasks.CHUNK_TASK, worker.tasks.MERGE_TASK):
            task = app.tasks[name]
            assert task.acks_late and task.reject_on_worker_lost, name
        assert not app.tasks[worker.tasks.CHUNK_TASK].ignore_result  # the chord needs its result
    finally:
        get_settings.cache_clear()


def test_analysis_processes_fork_unless_a_sandbox_command_is_set() -> None:
    assert Settings().launch == "fork"
    assert Settings(sandbox_launch="exec").launch == "exec"
    assert Settings(sandbox_command="bwrap --").launch == "exec"
    assert Settings(sandbox_command="bwrap --", sandbox_launch="exec").launch == "exec"
    with pytest.raises(ValidationError, match="sandbox command"):
        Settings(sandbox_command="bwrap --", sandbox_launch="fork")
    with pytest.raises(ValidationError):
        Settings(sandbox_launch="spawn")  # type: ignore[arg-type]
