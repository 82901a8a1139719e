"""Every dependency the routes use, as ``Annotated`` aliases.

The app holds one :class:`Services` (Redis client, job store, storage, queue client, API keys,
artifact ownership, idempotency keys), built on first use from the app's settings and closed at
shutdown. Tests give ``create_app`` their own ``Settings`` instead of patching the environment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings, get_settings
from neuronscope.storage import Storage, open_storage
from service.core.auth import Authenticator
from service.core.idempotency import IdempotencyStore
from service.core.ownership import ArtifactOwnership
from service.core.queue import JobQueue
from service.errors import Unauthorized


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    storage: Storage
    queue: JobQueue
    auth: Authenticator
    ownership: ArtifactOwnership
    idempotency: IdempotencyStore

    @classmethod
    def build(cls, settings: Settings) -> Services:
        client = connect(settings.require_redis_url())
        return cls(
            settings=settings,
            redis=client,
            jobs=JobStore(client, prefix=settings.key_prefix, ttl_s=settings.job_ttl_s),
            storage=open_storage(settings.storage_backend, settings.data_dir),
            queue=JobQueue(settings),
            auth=Authenticator.of(settings.api_keys),
            ownership=ArtifactOwnership(client, prefix=settings.key_prefix),
            idempotency=IdempotencyStore(
                client, prefix=settings.key_prefix, ttl_s=settings.idempotency_ttl_s
            ),
        )

    def close(self) -> None:
        self.queue.close()
        self.redis.close()


_lock = threading.Lock()


def app_settings(app: FastAPI) -> Settings:
    settings = getattr(app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def app_services(app: FastAPI) -> Services:
    services = getattr(app.state, "services", None)
    if services is None:
        with _lock:
            services = getattr(app.state, "services", None)
            if services is None:
                services = Services.build(app_settings(app))
                app.state.services = services
    assert isinstance(services, Services)
    return services


def get_settings_dep(request: Request) -> Settings:
    return app_settings(request.app)


def get_services(request: Request) -> Services:
    return app_services(request.app)


ServicesDep = Annotated[Services, Depends(get_services)]


def get_job_store(services: ServicesDep) -> JobStore:
    return services.jobs


def get_storage(services: ServicesDep) -> Storage:
    return services.storage


def get_queue(services: ServicesDep) -> JobQueue:
    return services.queue


def get_redis(services: ServicesDep) -> redis.Redis:
    return services.redis


def get_ownership(services: ServicesDep) -> ArtifactOwnership:
    return services.ownership


def get_idempotency(services: ServicesDep) -> IdempotencyStore:
    return services.idempotency


#: Documents ``Authorization: Bearer KEY`` in the OpenAPI document; the check itself runs in
#: ``service.middleware.RequestGuard``, before the body is read.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from NEURONSCOPE_API_KEYS. Needed on every /v1 route when keys are configured.",
)


def get_tenant(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> str:
    """The caller's tenant, as the request guard established it."""
    tenant = getattr(request.state, "tenant", None)
    if not isinstance(tenant, str):  # only if the guard is missing: refuse rather than guess
        raise Unauthorized("this request was not authenticated")
    return tenant


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
OwnershipDep = Annotated[ArtifactOwnership, Depends(get_ownership)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]
TenantDep = Annotated[str, Depends(get_tenant)]
