"""The workers' Celery app: ``celery -A worker.celery_app worker``.

Configuration comes from :meth:`neuronscope.settings.Settings.celery_config`, read lazily when
Celery first needs it (not at import), the same settings the API publishes with.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from neuronscope.settings import Settings, get_settings


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (``None``: the environment's, read on first use)."""
    celery = Celery("neuronscope", set_as_current=False, include=["worker.tasks"])
    if settings is not None:
        celery.conf.update(settings.celery_config())
    else:

        def defaults() -> dict[str, Any]:
            return get_settings().celery_config()

        celery.add_defaults(defaults)
    return celery


app = create_celery()
