"""The workers' Celery app: ``celery -A worker.celery_app worker``.

Configuration comes from :meth:`neuronscope.settings.Settings.celery_config` (the same settings the
API publishes with, the same redelivery time included) plus what only consumers need: how often
to sweep for jobs whose worker died, and a result backend for the chords that run a split
analysis. It is read lazily when Celery first needs it (not at import).

When a worker has started, its main process removes the job directories of killed attempts and
starts the retention sweep (:mod:`worker.housekeeping`); it stops the sweep when it shuts down.
A GPU worker (``NEURONSCOPE_DEVICE=cuda``) first checks that torch and onnxruntime see the device
(:mod:`worker.device_check`) and exits when they do not; it runs Celery's solo pool.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown

from neuronscope.settings import Settings, get_settings

#: Chord bookkeeping is kept this long; a split analysis must finish within it.
RESULT_EXPIRES_S = 7 * 24 * 3600


def worker_config(settings: Settings) -> dict[str, Any]:
    """The API's Celery settings with the consumer side added.

    Redis redelivers a job nobody acknowledged after the visibility timeout; workers look for such
    jobs when they start and then every :attr:`Settings.restore_interval_s` seconds. A GPU worker
    runs the solo pool: its start-up check initialised CUDA, which a forked pool child could not use.
    """
    config = settings.celery_config()
    config["broker_transport_options"] = {
        **config["broker_transport_options"],
        "visibility_timeout": settings.redelivery_after_s,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
    }
    config.update(
        {
            "result_backend": settings.require_redis_url(),
            "result_backend_transport_options": {"global_keyprefix": f"{settings.key_prefix}:celery:"},
            "result_expires": RESULT_EXPIRES_S,
            "result_extended": False,
        }
    )
    if settings.device == "cuda":
        config["worker_pool"] = "solo"
    return config


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (``None``: the environment's, read on first use)."""
    celery = Celery("neuronscope", set_as_current=False, include=["worker.tasks"])
    if settings is not None:
        celery.conf.update(worker_config(settings))
    else:

        def defaults() -> dict[str, Any]:
            return worker_config(get_settings())

        celery.add_defaults(defaults)
    return celery


app = create_celery()


_sweepers: list[Any] = []


def _on_worker_init(**_: Any) -> None:
    from worker.device_check import refuse_unless_device_ready

    refuse_unless_device_ready(get_settings())


def _on_worker_ready(**_: Any) -> None:
    from worker.housekeeping import RetentionSweeper, clean_up_at_start

    settings = get_settings()
    clean_up_at_start(settings)
    sweeper = RetentionSweeper(settings)
    sweeper.start()
    _sweepers.append(sweeper)


def _on_worker_shutdown(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()


worker_init.connect(_on_worker_init, weak=False)
worker_ready.connect(_on_worker_ready, weak=False)
worker_shutdown.connect(_on_worker_shutdown, weak=False)
