"""Which tenant uploaded which artifact.

Storage is content-addressed and shared: the same bytes are stored once, whoever sent them. What
is per tenant is the right to use an id, recorded in one Redis set per tenant and kind
(``{prefix}:tenant:{tenant}:models`` / ``:datasets``). A tenant can look up, or analyse by id,
only what it uploaded itself; anything else answers exactly like an unknown id.
"""

from __future__ import annotations

import redis

from neuronscope.storage import ArtifactKind


class ArtifactOwnership:
    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, tenant: str, kind: ArtifactKind) -> str:
        return f"{self._prefix}:tenant:{tenant}:{kind}s"

    def grant(self, tenant: str, kind: ArtifactKind, artifact_id: str) -> bool:
        """Record that ``tenant`` uploaded the artifact; ``True`` when it had not before."""
        return bool(self._r.sadd(self._key(tenant, kind), artifact_id))

    def owns(self, tenant: str, kind: ArtifactKind, artifact_id: str) -> bool:
        return bool(self._r.sismember(self._key(tenant, kind), artifact_id))
