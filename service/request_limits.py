"""How many headers a request may carry, and how many requests one API process serves at once.

A pure ASGI middleware in front of everything else, so it holds however the app is served:

- More than ``max_headers`` header fields, or header fields of more than ``max_header_bytes`` in
  all, is 431 ``request_headers_too_large`` (the head's size is bounded before parsing too, by
  :mod:`service.http_protocol`, when the app is served through :mod:`service.server`).
- A request that finds ``max_concurrent_requests`` others in progress is 503 ``server_busy`` with
  ``Retry-After`` at once, nothing read. Health probes (:data:`PROBE_PATHS`) are not counted and
  never refused, so an orchestrator still sees a busy process as alive.

Counts are per process: with several uvicorn processes the limit applies to each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from neuronscope.settings import Settings
from service.errors import ApiError, api_error_response
from service.middleware import has_body, request_headers

log = logging.getLogger("neuronscope.api")

#: Answered whatever the load: liveness and readiness.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
#: Seconds a client told 503 ``server_busy`` should wait before it tries again.
RETRY_AFTER_S = 1


class HeadersTooLarge(ApiError):
    status_code = 431
    code = "request_headers_too_large"


class ServerBusy(ApiError):
    status_code = 503
    code = "server_busy"


def check_headers(headers: Iterable[tuple[bytes, bytes]], settings: Settings) -> None:
    """Raise :class:`HeadersTooLarge` when ``headers`` exceed the count or size limit."""
    count = 0
    size = 0
    for name, value in headers:
        count += 1
        size += len(name) + len(value) + 4  # "name: value\r\n"
    if count > settings.max_headers:
        raise HeadersTooLarge(
            f"request headers: expected at most {settings.max_headers} header fields "
            f"(NEURONSCOPE_MAX_HEADERS), got {count}"
        )
    if size > settings.max_header_bytes:
        raise HeadersTooLarge(
            f"request headers: expected at most {settings.max_header_bytes} bytes "
            f"(NEURONSCOPE_MAX_HEADER_BYTES), got {size}"
        )


class RequestLimits:
    """The header and concurrency limits for one app (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, settings: Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests in progress now, health probes aside."""
        return self._in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self._settings()
        try:
            check_headers(scope["headers"], settings)
        except HeadersTooLarge as exc:
            await self._refuse(exc, scope, receive, send)
            return
        if scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        # One event loop per process: nothing runs between this check and the increment.
        if self._in_flight >= settings.max_concurrent_requests:
            busy = ServerBusy(
                f"requests in progress: expected fewer than {settings.max_concurrent_requests} "
                f"(NEURONSCOPE_MAX_CONCURRENT_REQUESTS), got {self._in_flight}; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await self._refuse(busy, scope, receive, send)
            return
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _refuse(self, exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        log.info("refused %s %s: %s", scope["method"], scope["path"], exc.code)
        if isinstance(exc, HeadersTooLarge) or has_body(request_headers(scope)):
            exc.headers = {**(exc.headers or {}), "Connection": "close"}  # never read the body
        await api_error_response(exc)(scope, receive, send)
