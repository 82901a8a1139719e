"""The API's side of the queue: publish a job id by task name, ping the workers. No worker code."""

from __future__ import annotations

from typing import Any

from celery import Celery

from neuronscope.settings import ANALYSIS_TASK, Settings


class JobQueue:
    """A publishing-only Celery client configured exactly like the workers."""

    def __init__(self, settings: Settings) -> None:
        self._celery = Celery("neuronscope-api", set_as_current=False)
        self._celery.conf.update(settings.celery_config())

    def enqueue(self, job_id: str) -> None:
        """Queue ``analysis.run`` for a job whose record and uploads are already stored."""
        self._celery.send_task(ANALYSIS_TASK, kwargs={"job_id": job_id}, task_id=job_id)

    def ping_workers(self, timeout_s: float) -> int:
        """How many workers answered a ping within ``timeout_s`` (stops at the first answer)."""
        replies: list[dict[str, Any]] = self._celery.control.ping(timeout=timeout_s, limit=1) or []
        return len(replies)

    def close(self) -> None:
        self._celery.close()
