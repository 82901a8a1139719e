"""The per-tenant storage quota (``NEURONSCOPE_TENANT_QUOTA_MB``), checked while an upload streams in.

A tenant's usage is the size of every upload it owns, each counted in full (bytes shared with
other tenants included), plus its uploads being received right now (counted in Redis, so parallel
uploads cannot each slip under the quota). An upload is refused as soon as it would pass the
quota, before the rest of it is written; at its end, usage is counted afresh.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import BinaryIO, cast

from neuronscope.ownership import ArtifactOwnership
from neuronscope.settings import Settings
from neuronscope.storage import ArtifactKind, Storage
from service.errors import StorageQuotaExceeded

_MIB = 1024 * 1024


def tenant_usage(storage: Storage, ownership: ArtifactOwnership, tenant: str) -> int:
    """Bytes of the uploads ``tenant`` owns that are still stored."""
    total = 0
    for kind in ("model", "dataset"):
        for artifact_id in ownership.owned(tenant, kind):
            info = storage.artifact(kind, artifact_id)
            total += info.size if info is not None else 0
    return total


class _QuotaReader:
    """``source`` read through, refusing (``StorageQuotaExceeded``) what would pass the quota."""

    def __init__(
        self,
        source: BinaryIO,
        *,
        kind: ArtifactKind,
        tenant: str,
        quota: int,
        storage: Storage,
        ownership: ArtifactOwnership,
    ) -> None:
        self._source = source
        self._kind = kind
        self._tenant = tenant
        self._quota = quota
        self._storage = storage
        self._ownership = ownership
        self._stored = tenant_usage(storage, ownership, tenant)
        self.counted = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        if chunk:
            self.counted += len(chunk)
            in_flight = self._ownership.add_in_flight(self._tenant, len(chunk))
            self._check(self._stored, in_flight)
        else:  # the end: count again, others may have stored uploads meanwhile
            self._stored = tenant_usage(self._storage, self._ownership, self._tenant)
            self._check(self._stored, self._ownership.in_flight(self._tenant))
        return chunk

    def _check(self, stored: int, in_flight: int) -> None:
        if stored + in_flight <= self._quota:
            return
        others = max(in_flight - self.counted, 0)
        raise StorageQuotaExceeded(
            f"{self._kind}: expected uploads within tenant {self._tenant!r}'s storage quota of "
            f"{self._quota / _MIB:g} MiB (NEURONSCOPE_TENANT_QUOTA_MB), got {stored / _MIB:.2f} MiB stored"
            + (f" plus {others / _MIB:.2f} MiB being uploaded" if others else "")
            + f" and this upload past {self.counted / _MIB:.2f} MiB; "
            "delete uploads (DELETE /v1/models/{id}, /v1/datasets/{id}) to make room"
        )


@contextlib.contextmanager
def within_quota(
    source: BinaryIO,
    *,
    kind: ArtifactKind,
    tenant: str,
    settings: Settings,
    storage: Storage,
    ownership: ArtifactOwnership,
) -> Iterator[BinaryIO]:
    """``source`` as a stream that stops at the tenant's quota (unchanged when there is none)."""
    if not settings.tenant_quota_mb:
        yield source
        return
    reader = _QuotaReader(
        source,
        kind=kind,
        tenant=tenant,
        quota=settings.tenant_quota_mb * _MIB,
        storage=storage,
        ownership=ownership,
    )
    try:
        yield cast(BinaryIO, reader)
    finally:
        if reader.counted:
            ownership.add_in_flight(tenant, -reader.counted)
