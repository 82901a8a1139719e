"""``GET /healthz`` (the process answers) and ``GET /readyz`` (Redis and a worker answer)."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from neuronscope.confinement import host_confinement
from service.api.deps import QueueDep, RedisDep, SettingsDep
from service.errors import ServiceUnavailable, error_responses
from service.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The API process is alive. Touches nothing else."""
    return Health()


@router.get("/readyz", response_model=Ready, responses=error_responses(503))
def readyz(client: RedisDep, queue: QueueDep, settings: SettingsDep) -> Ready:
    """Redis answers a ping and at least one worker answers a Celery ping; says which confinement
    the processes that open uploaded models get on this host."""
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ServiceUnavailable(f"Redis does not answer: {exc}", code="not_ready") from exc
    try:
        workers = queue.ping_workers(settings.readyz_timeout_s)
    except Exception as exc:  # kombu raises transport-specific errors
        raise ServiceUnavailable(f"the queue does not answer: {exc}", code="not_ready") from exc
    if workers == 0:
        raise ServiceUnavailable(
            f"no worker answered a ping within {settings.readyz_timeout_s} s; start one with "
            "`celery -A worker.celery_app worker`",
            code="not_ready",
        )
    found = host_confinement()
    confined = bool(found.get("active"))
    return Ready(
        workers=workers,
        confinement=str(found.get("mechanism", "none")) if confined else "none",
        confined=confined,
    )
