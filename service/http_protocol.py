"""uvicorn's httptools protocol with a bounded request head: the limits an ASGI app cannot set.

The app only sees a request once its head is parsed, and httptools concatenates a header value
chunk by chunk (quadratic in its size): one 64 MiB header held the event loop, and every other
client, for seconds. :class:`LimitedHttpToolsProtocol` therefore counts the head's bytes *before*
handing them to the parser:

- a head (request line and headers) past ``max_head_bytes`` is answered 431
  ``request_headers_too_large`` and the connection is closed, the rest unread;
- a head that is not complete ``head_timeout_s`` after its first byte (or after the connection
  opened) is answered 408 ``header_read_timeout`` and the connection is closed (slow-loris).

The number of header fields, the body read timeout and the concurrency limit are the app's
(:mod:`service.request_limits`, :mod:`service.middleware`), so they hold however it is served.
Build the class for some settings with :func:`limited_http_protocol`; :mod:`service.server` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from neuronscope.settings import Settings

log = logging.getLogger("neuronscope.api")

_HEAD_END = b"\r\n\r\n"
#: After a refusal, how long the connection stays open for the client to read the answer.
LINGER_S = 2.0
#: ... and how many more bytes it reads (and drops) meanwhile before it closes at once.
LINGER_BYTES = 512 * 1024


def refusal(status: int, code: str, detail: str) -> bytes:
    """A complete ``Connection: close`` response with the API's ``{"error", "detail"}`` body."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (
        b"content-type: application/json\r\n"
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection; see the module docstring. Subclassed per settings by :func:`limited_http_protocol`."""

    max_head_bytes: ClassVar[int] = Settings.model_fields["max_header_bytes"].default
    head_timeout_s: ClassVar[float] = Settings.model_fields["header_read_timeout_s"].default

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True  # waiting for (the rest of) a request head
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far, to find a terminator split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._discarded = 0
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._refused:  # lingering: drop what the client still sends, up to LINGER_BYTES
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._arm_head_timer()
            seen = self._tail + data
            end = seen.find(_HEAD_END)
            self._head_bytes += len(data) if end < 0 else end + len(_HEAD_END) - len(self._tail)
            self._tail = seen[-(len(_HEAD_END) - 1) :]
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431,
                    "request_headers_too_large",
                    f"request head: expected at most {self.max_head_bytes} bytes of request line and "
                    f"headers (NEURONSCOPE_MAX_HEADER_BYTES), got more; the rest was not read",
                )
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # still answering the previous request: the next head may wait
            return
        if self._head_bytes == 0:
            # Nothing sent yet: close quietly (an idle keep-alive connection is uvicorn's to close).
            if self.cycle is None:
                self.transport.close()
            return
        self._refuse(
            408,
            "header_read_timeout",
            f"request head: expected it complete within {self.head_timeout_s:g} s "
            f"(NEURONSCOPE_HEADER_READ_TIMEOUT_S), got {self._head_bytes} bytes",
        )

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer and close. Closing a socket with unread bytes resets the connection, which can
        destroy the answer before the client reads it: so send it, end the sending side, and read
        and drop up to :data:`LINGER_BYTES` more for up to :data:`LINGER_S` before closing (a
        lingering close, as nginx does)."""
        log.info("refused a request from %s: %s", self.client, code)
        self._cancel_head_timer()
        self._refused = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head while the app still answers: no room for ours
            return
        self.transport.write(refusal(status, code, detail))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_S, self.transport.close)


def limited_http_protocol(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` with ``settings``' head size and timeout."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_head_bytes": settings.max_header_bytes, "head_timeout_s": settings.header_read_timeout_s},
    )
