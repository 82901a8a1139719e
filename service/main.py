"""Builds the FastAPI app. ``python -m service.server`` serves it with every request limit
(``uvicorn service.main:app`` without the request-head ones: see :mod:`service.server`); tests
call ``create_app(settings)``.

This process never imports torch, onnxruntime or ``worker``: it stores uploads, keeps job records
in Redis and queues ``analysis.run`` by name.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import neuronscope
from neuronscope.confinement import host_confinement
from neuronscope.settings import DEFAULT_TENANT, Settings
from service.api.deps import app_services, app_settings
from service.api.routes import analyze, artifacts, health, jobs
from service.errors import install_error_handlers
from service.middleware import RequestGuard
from service.request_limits import RequestLimits

DESCRIPTION = """\
Upload an ONNX or TorchScript model and a dataset, get a job id at once, poll the job, fetch the
dying-neuron report. Every error body is `{"error": CODE, "detail": MESSAGE}`.

When the server has API keys configured, every `/v1` route needs `Authorization: Bearer KEY`
(401 otherwise). Each key belongs to a tenant, and a tenant sees only its own jobs, reports and
uploads: anyone else's ids answer 404, exactly like unknown ones.
"""

log = logging.getLogger("neuronscope.api")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Fail at start-up, not on the first request, when settings are unusable.
    if not app_services(app).auth.enabled:
        log.warning(
            "no API keys configured (NEURONSCOPE_API_KEYS): every client is tenant %r; "
            "serve only on a trusted network",
            DEFAULT_TENANT,
        )
    found = host_confinement()
    if found.get("active"):
        log.info("processes that open uploaded models are confined: %s", found.get("mechanism"))
    else:
        log.warning(
            "this host cannot confine the processes that open uploaded models (%s): PyTorch-format "
            "uploads are %s",
            found.get("error") or found.get("mechanism"),
            "accepted (NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true)"
            if app_settings(app).sandbox_allow_unconfined
            else "refused (sandbox_unavailable)",
        )
    yield
    services = getattr(app.state, "services", None)
    if services is not None:
        services.close()
        app.state.services = None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. ``settings=None`` reads the environment (once, cached) on the first request."""
    app = FastAPI(
        title="neuronscope",
        version=neuronscope.__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.services = None
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        settings=lambda: app_settings(app),
        authenticator=lambda: app_services(app).auth,
    )
    # Added last, so it runs first: header and concurrency limits before authentication.
    app.add_middleware(RequestLimits, settings=lambda: app_settings(app))
    for module in (analyze, artifacts, jobs, health):
        app.include_router(module.router)
    logging.getLogger("neuronscope").setLevel(settings.log_level if settings else logging.INFO)
    return app


app = create_app()
