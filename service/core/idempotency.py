"""``Idempotency-Key`` on ``POST /v1/analyze``: one key, one request body, one job.

A key is claimed with ``SET NX EX`` under ``{prefix}:tenant:{tenant}:idempotency:{sha256(key)}``
(so keys are per tenant and of bounded size in Redis), storing the request's fingerprint and the
job id minted for it. Whoever loses the ``SET NX`` race reads the winner's claim: the same
fingerprint means the same job; another fingerprint means the key was reused for a different
request. A claim whose job could not be created is released, so the client may retry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from neuronscope.contracts import AnalysisConfig


@dataclass(frozen=True)
class Claim:
    key: str
    job_id: str
    fingerprint: str
    new: bool


class FingerprintMismatch(Exception):
    """The key was first used with another request body."""


class ClaimContended(Exception):
    """The key was claimed and released again and again while this request tried to claim it."""


def fingerprint(model_id: str, dataset_id: str, config_json: str) -> str:
    """sha256 of what defines an analysis: the two content ids and the config with its defaults
    filled in (so ``{}`` and the defaults spelled out are the same request), as canonical JSON."""
    config = AnalysisConfig.model_validate_json(config_json).model_dump(mode="json")
    canonical = json.dumps(
        {"model_id": model_id, "dataset_id": dataset_id, "config": config},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, client: redis.Redis, *, prefix: str, ttl_s: int) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    def _key(self, tenant: str, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return f"{self._prefix}:tenant:{tenant}:idempotency:{digest}"

    def claim(self, tenant: str, key: str, fingerprint: str, job_id: str) -> Claim:
        """Claim ``key`` for ``job_id``, or return the job it was claimed for before.

        Raises :class:`FingerprintMismatch` when the earlier request had another fingerprint.
        """
        redis_key = self._key(tenant, key)
        value = json.dumps({"fingerprint": fingerprint, "job_id": job_id})
        for _ in range(3):  # an earlier claim can expire or be released between SET and GET
            if self._r.set(redis_key, value, nx=True, ex=self._ttl_s):
                return Claim(key, job_id, fingerprint, new=True)
            raw = cast(str | None, self._r.get(redis_key))
            if raw is None:
                continue
            stored: dict[str, Any] = json.loads(raw)
            if stored.get("fingerprint") != fingerprint:
                raise FingerprintMismatch
            return Claim(key, str(stored["job_id"]), fingerprint, new=False)
        raise ClaimContended

    def release(self, tenant: str, claim: Claim) -> None:
        """Forget a claim whose job was not created (best effort: it expires anyway)."""
        redis_key = self._key(tenant, claim.key)

        def body(pipe: redis.client.Pipeline) -> None:
            raw = cast(str | None, pipe.get(redis_key))
            pipe.multi()
            if raw is not None and json.loads(raw).get("job_id") == claim.job_id:
                pipe.delete(redis_key)

        with contextlib.suppress(redis.RedisError):
            self._r.transaction(body, redis_key)
