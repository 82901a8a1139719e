"""Builds the FastAPI app. ``uvicorn service.main:app`` serves it; tests call ``create_app(settings)``.

This process never imports torch, onnxruntime or ``worker``: it stores uploads, keeps job records
in Redis and queues ``analysis.run`` by name.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import neuronscope
from neuronscope.settings import Settings
from service.api.deps import app_services
from service.api.routes import analyze, artifacts, health, jobs
from service.errors import install_error_handlers

DESCRIPTION = """\
Upload an ONNX or TorchScript model and a dataset, get a job id at once, poll the job, fetch the
dying-neuron report. Every error body is `{"error": CODE, "detail": MESSAGE}`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app_services(app)  # fail at start-up, not on the first request, when settings are unusable
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
    for module in (analyze, artifacts, jobs, health):
        app.include_router(module.router)
    logging.getLogger("neuronscope").setLevel(settings.log_level if settings else logging.INFO)
    return app


app = create_app()
