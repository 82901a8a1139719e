"""Removing what the service no longer keeps: an owner's deleted upload, and uploads and reports
past their time to live (``NEURONSCOPE_ARTIFACT_TTL_S``, ``NEURONSCOPE_REPORT_TTL_S``).

Uploads are shared by content, so an upload's bytes go only when no tenant owns its id; the TTL
sweep takes the id from every tenant first. Both hold the artifact's lock while they decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from neuronscope.ownership import ArtifactOwnership
from neuronscope.storage import ArtifactKind, Storage

log = logging.getLogger("neuronscope.retention")

#: Staged files untouched this long were left by a killed process (a live upload writes on).
STAGING_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class SweepResult:
    artifacts: int
    reports: int
    staged: int = 0


def release_artifact(
    storage: Storage, ownership: ArtifactOwnership, tenant: str, kind: ArtifactKind, artifact_id: str
) -> bool:
    """Take the artifact away from ``tenant`` and remove its bytes if no other tenant owns it.

    ``False`` when the tenant did not own it (the caller answers as for an unknown id).
    """
    with ownership.lock(kind, artifact_id):
        if not ownership.revoke(tenant, kind, artifact_id):
            return False
        if ownership.orphaned(kind, artifact_id):
            storage.delete_artifact(kind, artifact_id)
    return True


def sweep_expired(
    storage: Storage,
    ownership: ArtifactOwnership,
    *,
    artifact_ttl_s: int,
    report_ttl_s: int,
    now: datetime | None = None,
) -> SweepResult:
    """Remove uploads last uploaded, and reports written, longer ago than their TTL (0: never),
    and staged files a killed process left behind."""
    now = now or datetime.now(UTC)
    artifacts = reports = 0
    staged = storage.discard_staged_before(now - timedelta(seconds=STAGING_MAX_AGE_S))
    if artifact_ttl_s:
        cutoff = now - timedelta(seconds=artifact_ttl_s)
        for kind, artifact_id in list(storage.artifacts_older_than(cutoff)):
            with ownership.lock(kind, artifact_id):
                uploaded = storage.artifact_uploaded_at(kind, artifact_id)
                if uploaded is None or uploaded >= cutoff:  # gone, or uploaded again since listed
                    continue
                ownership.revoke_everywhere(kind, artifact_id)
                artifacts += storage.delete_artifact(kind, artifact_id)
    if report_ttl_s:
        cutoff = now - timedelta(seconds=report_ttl_s)
        for job_id in list(storage.reports_older_than(cutoff)):
            reports += storage.delete_report(job_id)
    if artifacts or reports or staged:
        log.info(
            "retention: removed %d expired uploads, %d expired reports and %d abandoned staged files",
            artifacts,
            reports,
            staged,
        )
    return SweepResult(artifacts=artifacts, reports=reports, staged=staged)
