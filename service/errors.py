"""The API's errors: one base with a status code, one handler, one body ``{"error", "detail"}``."""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Mapping
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuronscope.errors import InvalidInput, NeuronscopeError
from service.schemas import ErrorBody

log = logging.getLogger("neuronscope.api")


class ApiError(NeuronscopeError):
    """An error that ends a request with ``status_code`` and the ``{"error", "detail"}`` body."""

    status_code: int = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.headers = headers


class InvalidRequest(ApiError, InvalidInput):
    status_code = 422
    code = "invalid_request"


class Unauthorized(ApiError):
    """No API key, or one that is not configured. The detail never repeats what was sent."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="neuronscope"' + (', error="invalid_token"' if invalid_token else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


class ReportNotReady(NotFound):
    code = "report_not_ready"


class JobAlreadyFinished(ApiError):
    status_code = 409
    code = "job_finished"


class IdempotencyKeyInUse(ApiError):
    status_code = 409
    code = "idempotency_key_in_use"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class TooManyJobs(ApiError):
    status_code = 429
    code = "too_many_jobs"

    def __init__(self, message: str, *, retry_after_s: int = 15) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class FeatureNotAvailable(ApiError):
    status_code = 501
    code = "not_implemented"


class ReportCorrupt(ApiError):
    """The stored report does not parse as a report: it is never served."""

    status_code = 500
    code = "report_corrupt"


class InsufficientStorage(ApiError):
    status_code = 507
    code = "insufficient_storage"


class StorageQuotaExceeded(InsufficientStorage):
    code = "storage_quota_exceeded"


#: What a write answers when the disk, or the disk quota, is full.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


#: Descriptions for the error statuses routes declare in ``responses=``.
_DESCRIPTIONS = {
    400: "The body is not well-formed multipart/form-data",
    401: "No API key, or an unknown one (see WWW-Authenticate); only when API keys are configured",
    404: "Unknown id (or another tenant's), or no report yet",
    409: "The job has already finished",
    413: "Request body or upload larger than the configured limit",
    422: "Invalid request, config, model or dataset",
    429: "Too many unfinished jobs for this tenant (see Retry-After)",
    500: "The stored report is corrupt (report_corrupt), or an unexpected error",
    501: "Not available in this build",
    503: "Redis or the queue is unreachable (see Retry-After), or no worker answers",
    507: "The tenant's storage quota (storage_quota_exceeded) or the server's disk "
    "(insufficient_storage) is full",
}


def error_responses(*statuses: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries so the OpenAPI document lists each error body.

    ``json_route=False`` for routes whose success is not JSON (FastAPI would otherwise document
    the error bodies under the route's own media type).
    """
    if json_route:
        return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"description": _DESCRIPTIONS[status], "content": content} for status in statuses}


def error_response(
    code: str, detail: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The ``{"error", "detail"}`` response (also used by the middleware, outside the handlers)."""
    return JSONResponse(
        ErrorBody(error=code, detail=detail).model_dump(), status_code=status, headers=headers
    )


def api_error_response(exc: ApiError) -> JSONResponse:
    return error_response(exc.code, exc.message, exc.status_code, exc.headers)


def _status_of(exc: NeuronscopeError) -> int:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    return 422 if isinstance(exc, InvalidInput) else 400


def _format_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the app documents for ``path`` (plus HEAD where GET is), for ``Allow``."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi()["paths"].items():
            parts = re.split(r"\{[^}]+\}", template)
            pattern = re.compile("[^/]+".join(re.escape(part) for part in parts))
            table.append((pattern, {method.upper() for method in operations}))
        app.state.allow_table = table
    methods: set[str] = set()
    for pattern, operations in table:
        if pattern.fullmatch(path):
            methods |= operations
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def on_neuronscope_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NeuronscopeError)
        return error_response(exc.code, exc.message, _status_of(exc), getattr(exc, "headers", None))

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response("invalid_request", _format_validation(exc), 422)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette lists only the first route that matched the path; list them all.
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path)) or headers.get("Allow", "")
        return error_response(code, str(exc.detail), exc.status_code, headers)

    async def on_redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unreachable: %s", exc)
        return error_response(
            "redis_unavailable",
            "the job store (Redis) is unreachable; retry later",
            503,
            {"Retry-After": "5"},
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response("internal_error", "an unexpected error occurred; it has been logged", 500)

    async def on_os_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OSError)
        if exc.errno not in NO_SPACE_ERRNOS:
            return await on_unexpected(request, exc)
        log.error("storage full: %s", exc)
        return api_error_response(
            InsufficientStorage(
                "the server's storage is full (no space left on device); nothing was stored. "
                "Retry later, or ask the operator to free space"
            )
        )

    app.add_exception_handler(NeuronscopeError, on_neuronscope_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(redis.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.TimeoutError, on_redis_down)
    app.add_exception_handler(OSError, on_os_error)  # a full disk is 507, not 500
    app.add_exception_handler(Exception, on_unexpected)
