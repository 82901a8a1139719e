"""Which tenant uploaded which artifact.

Storage is content-addressed and shared: the same bytes are stored once, whoever sent them. What
is per tenant is the right to use an id, recorded in one Redis set per tenant and kind
(``{prefix}:tenant:{tenant}:models`` / ``:datasets``). A tenant can look up, or analyse by id,
only what it uploaded itself; anything else answers exactly like an unknown id. The bytes may go
once no tenant's set holds their id any more (:meth:`ArtifactOwnership.orphaned`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from redis.lock import Lock

from neuronscope.storage import ArtifactKind

#: How long a tenant's bytes in flight are remembered if the API process dies mid-upload.
_IN_FLIGHT_TTL_S = 3600


class ArtifactOwnership:
    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, tenant: str, kind: ArtifactKind) -> str:
        return f"{self._prefix}:tenant:{tenant}:{kind}s"

    def _all_keys(self, kind: ArtifactKind) -> Iterator[str]:
        """Every tenant's set of ``kind`` ids (tenants no longer configured included)."""
        for key in self._r.scan_iter(match=f"{self._prefix}:tenant:*:{kind}s", count=500):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def grant(self, tenant: str, kind: ArtifactKind, artifact_id: str) -> bool:
        """Record that ``tenant`` uploaded the artifact; ``True`` when it had not before."""
        return bool(self._r.sadd(self._key(tenant, kind), artifact_id))

    def owns(self, tenant: str, kind: ArtifactKind, artifact_id: str) -> bool:
        return bool(self._r.sismember(self._key(tenant, kind), artifact_id))

    def owned(self, tenant: str, kind: ArtifactKind) -> set[str]:
        """The ids of every ``kind`` the tenant owns."""
        return {
            m.decode() if isinstance(m, bytes) else str(m) for m in self._r.smembers(self._key(tenant, kind))
        }

    def revoke(self, tenant: str, kind: ArtifactKind, artifact_id: str) -> bool:
        """Take the id away from ``tenant``; ``True`` when it owned it."""
        return bool(self._r.srem(self._key(tenant, kind), artifact_id))

    def orphaned(self, kind: ArtifactKind, artifact_id: str) -> bool:
        """Whether no tenant owns the id any more (its bytes may be removed)."""
        return not any(self._r.sismember(key, artifact_id) for key in self._all_keys(kind))

    def revoke_everywhere(self, kind: ArtifactKind, artifact_id: str) -> None:
        """Take the id away from every tenant (its bytes are gone)."""
        for key in self._all_keys(kind):
            self._r.srem(key, artifact_id)

    def lock(self, kind: ArtifactKind, artifact_id: str) -> Lock:
        """Held while an artifact's owners are checked and its bytes removed, so two removers
        (an owner's DELETE, the TTL sweep) do not interleave."""
        return cast(
            Lock,
            self._r.lock(
                f"{self._prefix}:artifact-lock:{kind}:{artifact_id}", timeout=60, blocking_timeout=30
            ),
        )

    # -- bytes in flight, for the storage quota --------------------------------------------------

    def _in_flight_key(self, tenant: str) -> str:
        return f"{self._prefix}:tenant:{tenant}:in-flight"

    def add_in_flight(self, tenant: str, size: int) -> int:
        """Count ``size`` more bytes of ``tenant``'s uploads being received; the new total."""
        key = self._in_flight_key(tenant)
        with self._r.pipeline() as pipe:
            pipe.incrby(key, size)
            pipe.expire(key, _IN_FLIGHT_TTL_S)
            total, _ = pipe.execute()
        return int(total)

    def in_flight(self, tenant: str) -> int:
        value = self._r.get(self._in_flight_key(tenant))
        return int(value) if value is not None else 0
