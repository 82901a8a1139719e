"""Every dependency the routes use, as ``Annotated`` aliases.

The app holds one :class:`Services` (Redis client, job store, storage, queue client), built on
first use from the app's settings and closed at shutdown. Tests give ``create_app`` their own
``Settings`` instead of patching the environment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Request

from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings, get_settings
from neuronscope.storage import Storage, open_storage
from service.core.queue import JobQueue


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    storage: Storage
    queue: JobQueue

    @classmethod
    def build(cls, settings: Settings) -> Services:
        client = connect(settings.require_redis_url())
        return cls(
            settings=settings,
            redis=client,
            jobs=JobStore(client, prefix=settings.key_prefix, ttl_s=settings.job_ttl_s),
            storage=open_storage(settings.storage_backend, settings.data_dir),
            queue=JobQueue(settings),
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


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
