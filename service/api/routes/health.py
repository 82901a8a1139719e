"""``GET /healthz`` (the process answers) and ``GET /readyz`` (Redis and a worker answer)."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter

from neuronscope.confinement import host_confinement
from neuronscope.confinement_reports import reported
from service.api.deps import QueueDep, RedisDep, SettingsDep
from service.errors import ServiceUnavailable, error_responses
from service.schemas import Health, Ready

router = APIRouter(tags=["health"])
log = logging.getLogger("neuronscope.api")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The API process is alive. Touches nothing else."""
    return Health()


@router.get("/readyz", response_model=Ready, responses=error_responses(503))
def readyz(client: RedisDep, queue: QueueDep, settings: SettingsDep) -> Ready:
    """Redis answers a ping and at least one worker answers a Celery ping; says which confinement
    the processes that open uploaded models get (confined only when this host and every worker
    host that reported within the hour confine them)."""
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
    unconfined_workers = [report for report in reported(client, settings.key_prefix) if not report.active]
    if unconfined_workers:
        log.warning(
            "workers on %s cannot confine their analysis processes: %s",
            ", ".join(report.host for report in unconfined_workers),
            "; ".join(report.reason for report in unconfined_workers),
        )
        confined = False
    return Ready(
        workers=workers,
        confinement=str(found.get("mechanism", "none")) if confined else "none",
        confined=confined,
    )
