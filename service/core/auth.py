"""API keys → tenants: ``Authorization: Bearer KEY`` checked in constant time, keys never logged.

Only the sha256 of each configured key is kept here. A presented key is hashed and compared with
every configured digest (``hmac.compare_digest``, no early exit), so neither the answer nor its
timing tells how much of a key was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from neuronscope.settings import DEFAULT_TENANT
from service.errors import Unauthorized


@dataclass(frozen=True)
class Authenticator:
    """Who a request is. Without keys every request is the default tenant (trusted networks only)."""

    _digests: tuple[tuple[bytes, str], ...]

    @classmethod
    def of(cls, api_keys: Mapping[str, str]) -> Authenticator:
        return cls(tuple((_digest(key), tenant) for key, tenant in api_keys.items()))

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:  # the digests stay out of logs and tracebacks too
        return f"Authenticator(keys={len(self._digests)})"

    def tenant(self, authorization: str | None) -> str:
        """The tenant of an ``Authorization`` header value; raises :class:`Unauthorized`."""
        if not self._digests:
            return DEFAULT_TENANT
        if not authorization:
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer KEY'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "expected 'Authorization: Bearer KEY', got another scheme or no key", invalid_token=True
            )
        presented = _digest(token)
        found: str | None = None
        for digest, tenant in self._digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = tenant
        if found is None:
            raise Unauthorized("the API key is not valid", invalid_token=True)
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
