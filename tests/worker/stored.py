"""Artifacts stored the way the API stores uploads, for worker tests that make jobs by hand."""

from __future__ import annotations

from pathlib import Path

from neuronscope.jobs import ArtifactRef
from neuronscope.storage import ArtifactFormat, ArtifactKind, FileSystemStorage
from worker.jobs.context import WorkerContext


def store_artifact(ctx: WorkerContext, kind: ArtifactKind, path: Path, fmt: ArtifactFormat) -> ArtifactRef:
    """Stage and commit ``path`` into ``ctx``'s storage; the reference a job record holds."""
    assert isinstance(ctx.storage, FileSystemStorage)
    with open(path, "rb") as f:
        staged = ctx.storage.stage(f, max_bytes=1 << 30)
    info, _ = ctx.storage.commit(staged, kind, fmt)
    return ArtifactRef(id=info.id, format=info.format)
