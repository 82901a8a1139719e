"""The guard in front of every request: who is asking, and how much they may send.

A pure ASGI middleware, so both checks happen before FastAPI reads a byte of the body:

- Every path but :data:`OPEN_PATHS` (so every ``/v1`` route) needs an API key when keys are
  configured (401 otherwise, nothing read); the tenant goes into ``request.state.tenant`` for the
  routes.
- Request bodies are counted as they arrive. A ``Content-Length`` over the route's limit is
  refused at once; a chunked body is refused as soon as the running count passes the limit, so
  neither Starlette's multipart spool nor storage ever holds more than the limit. The response
  is 413 with ``Connection: close`` (the rest of the body is never read). A 401 to a request
  with a body closes the connection too, so the server does not drain the body for keep-alive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuronscope.settings import Settings
from service.core.auth import Authenticator
from service.errors import ApiError, PayloadTooLarge, api_error_response

log = logging.getLogger("neuronscope.api")

_MIB = 1024 * 1024
#: What answers without an API key: health checks and the API's own documentation. Everything
#: else (every /v1 route, and any path that matches no route) needs one when keys are configured.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
#: Room for the multipart framing and the small form fields next to the files.
FORM_OVERHEAD_BYTES = _MIB
#: Routes that carry files, and how many files' worth of bytes each may carry.
_UPLOAD_ROUTES = {"/v1/models": 1, "/v1/datasets": 1, "/v1/analyze": 2}


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest request body a route accepts: its files at ``max_upload_bytes`` each plus
    :data:`FORM_OVERHEAD_BYTES`; other routes take no more than the overhead."""
    files = _UPLOAD_ROUTES.get(path.rstrip("/"), 0) if method == "POST" else 0
    return files * settings.max_upload_bytes + FORM_OVERHEAD_BYTES


class _BodyTooLarge(Exception):
    pass


class RequestGuard:
    """Authentication and the body-size limit for one app (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, *, settings: Callable[[], Settings], authenticator: Callable[[], Authenticator]
    ) -> None:
        self.app = app
        self._settings = settings
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = _headers(scope)
        try:
            if path not in OPEN_PATHS:
                tenant = self._authenticator().tenant(headers.get("authorization"))
                scope.setdefault("state", {})["tenant"] = tenant
            limit = body_limit(self._settings(), scope["method"], path)
            declared = headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                raise _too_large(limit, path)
        except ApiError as exc:
            log.info("refused %s %s: %s", scope["method"], path, exc.code)
            if _has_body(headers):  # never read it: close, or the server drains it for keep-alive
                exc.headers = {**(exc.headers or {}), "Connection": "close"}
            await _respond(exc, scope, receive, send)
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # what the app makes of the aborted body (a 400, say) is not sent
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            log.info("refused %s %s: body past %d bytes", scope["method"], scope["path"], limit)
            await _respond(_too_large(limit, scope["path"]), scope, receive, send)


def _too_large(limit: int, path: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body: expected at most {limit} bytes for {path} (each file at most "
        "NEURONSCOPE_MAX_UPLOAD_MB), got more; nothing was stored",
        headers={"Connection": "close"},
    )


async def _respond(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await api_error_response(exc)(scope, receive, send)


def _has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
