"""Fixtures for the CLI, client, gate, compare and HTML tests; the helpers are in ``ns_testlib``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ns_testlib import FakeApi, LiveService, ReportFactory, build_report

from neuronscope.contracts.report import Report


@pytest.fixture
def make_report() -> ReportFactory:
    """The factory, for tests that need several reports (compare) or special layer names."""
    return build_report


@pytest.fixture
def sample_report() -> Report:
    return build_report()


@pytest.fixture
def fake_api(sample_report: Report) -> FakeApi:
    return FakeApi(sample_report)


@pytest.fixture
def live_service(settings: Any) -> Iterator[LiveService]:
    """``service.main.create_app(settings)`` served by uvicorn on a free loopback port (no worker)."""
    uvicorn = pytest.importorskip("uvicorn")
    from service.main import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveService(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
