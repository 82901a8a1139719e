"""Helpers shared by the API tests (imported as ``api_testlib``; pytest puts this folder on the path)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import redis

from neuronscope.settings import Settings

#: Two tenants' API keys, as the tests configure them.
ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef0000"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The Celery messages waiting in this test's queue, decoded."""
    client = redis.Redis.from_url(settings.require_redis_url())
    try:
        raw = client.lrange(f"{settings.key_prefix}:celery:{settings.queue}", 0, -1)
    finally:
        client.close()
    messages = []
    for item in raw:
        message = json.loads(item)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append({"task": message["headers"]["task"], "args": args, "kwargs": kwargs})
    return messages


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert body["detail"]
    return dict(body)


def npz_bytes(samples: int = 8, features: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(samples, features)).astype(np.float32), y=rng.integers(0, 4, samples))
    return buf.getvalue()
