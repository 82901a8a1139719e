"""The guard in front of every request: who is asking, and how much they may send.

A pure ASGI middleware, so both checks happen before FastAPI reads a byte of the body:

- Every path but :data:`OPEN_PATHS` (so every ``/v1`` route) needs an API key when keys are
  configured (401 otherwise, nothing read); the tenant goes into ``request.state.tenant`` for the
  routes.
- Request bodies are counted and timed as they arrive. A ``Content-Length`` over the route's limit is
  refused at once; a chunked body is refused as soon as the running count passes the limit, so
  neither Starlette's multipart spool nor storage ever holds more than the limit. The response
  is 413 with ``Connection: close`` (the rest of the body is never read). A 401 to a request
  with a body closes the connection too, so the server does not drain the body for keep-alive.
- A body whose next bytes do not come within ``body_read_timeout_s`` (a stalled upload) is
  answered 408 ``body_read_timeout`` with ``Connection: close``, and what had arrived is dropped
  as for a 413. The timeout is between reads, so a slow upload that keeps coming is not cut off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
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


class BodyReadTimeout(ApiError):
    status_code = 408
    code = "body_read_timeout"


class _Aborted(Exception):
    """Raised into the app by ``receive`` when the body is refused; carries the answer."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.code)
        self.error = error


class RequestGuard:
    """Authentication and the body size and read-timeout limits for one app (see the module docstring)."""

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
        headers = request_headers(scope)
        settings = self._settings()
        try:
            if path not in OPEN_PATHS:
                tenant = self._authenticator().tenant(headers.get("authorization"))
                scope.setdefault("state", {})["tenant"] = tenant
            limit = body_limit(settings, scope["method"], path)
            declared = headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                raise _too_large(limit, path)
        except ApiError as exc:
            log.info("refused %s %s: %s", scope["method"], path, exc.code)
            if has_body(headers):  # never read it: close, or the server drains it for keep-alive
                exc.headers = {**(exc.headers or {}), "Connection": "close"}
            await _respond(exc, scope, receive, send)
            return
        await self._limited(scope, receive, send, limit, settings.body_read_timeout_s)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, limit: int, timeout_s: float
    ) -> None:
        received = 0
        body_done = False
        aborted: ApiError | None = None
        started = False

        async def counting_receive() -> Message:
            nonlocal received, body_done, aborted
            if aborted is not None:
                raise _Aborted(aborted)
            if body_done:  # only a disconnect can come now (Starlette waits for one while streaming)
                return await receive()
            try:
                with anyio.fail_after(timeout_s):
                    message = await receive()
            except TimeoutError:
                aborted = _stalled(timeout_s, received, scope["path"])
                raise _Aborted(aborted) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    aborted = _too_large(limit, scope["path"])
                    raise _Aborted(aborted)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if aborted is not None:  # what the app makes of the aborted body (a 400, say) is not sent
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if aborted is None:
                raise
        if aborted is not None and not started:
            log.info(
                "refused %s %s: %s after %d bytes", scope["method"], scope["path"], aborted.code, received
            )
            await _respond(aborted, scope, receive, send)


def _too_large(limit: int, path: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body: expected at most {limit} bytes for {path} (each file at most "
        "NEURONSCOPE_MAX_UPLOAD_MB), got more; nothing was stored",
        headers={"Connection": "close"},
    )


def _stalled(timeout_s: float, received: int, path: str) -> BodyReadTimeout:
    return BodyReadTimeout(
        f"request body: expected more bytes within {timeout_s:g} s for {path} "
        f"(NEURONSCOPE_BODY_READ_TIMEOUT_S), got none after {received} bytes; nothing was stored",
        headers={"Connection": "close"},
    )


async def _respond(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await api_error_response(exc)(scope, receive, send)


def has_body(headers: dict[str, str]) -> bool:
    """Whether the request declares a body (``Content-Length`` above 0 or ``Transfer-Encoding``)."""
    return headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last one wins)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
