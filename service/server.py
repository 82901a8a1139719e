"""Serve the API with all its request limits: ``python -m service.server --host 0.0.0.0 --port 8000``.

``neuronscope serve`` and this launcher build uvicorn's configuration with :func:`uvicorn_config`,
which puts :mod:`service.http_protocol` (request head size and time, ``NEURONSCOPE_MAX_HEADER_BYTES``
and ``NEURONSCOPE_HEADER_READ_TIMEOUT_S``) in front of the app. ``uvicorn service.main:app`` serves
the same app with the limits the app enforces itself (header count, body read timeout, concurrency)
but uvicorn's own protocol, which does not bound the request head: use it only behind a proxy that
does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import uvicorn

from neuronscope.settings import Settings, get_settings
from service.http_protocol import limited_http_protocol


def uvicorn_config(
    app: Callable[..., Any], settings: Settings, *, host: str, port: int, **options: Any
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` with ``settings``' request head limits."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_http_protocol(settings),
        log_level=settings.log_level.lower(),
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    from service.main import create_app

    parser = argparse.ArgumentParser(
        prog="python -m service.server", description="Serve the neuronscope API (settings: NEURONSCOPE_*)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    settings = get_settings()
    config = uvicorn_config(
        create_app(settings), settings, host=args.host, port=args.port, access_log=not args.no_access_log
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
