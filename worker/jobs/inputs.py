"""A job's inputs as private copies in its directory, each checked against its content id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from neuronscope.jobs import JobRecord
from neuronscope.storage import ArtifactKind, Storage
from worker.jobs.context import WorkerContext

_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "npz": ".npz", "npy": ".npy"}


@dataclass(frozen=True)
class JobInputs:
    """A job's model, dataset and config, as private copies in its temporary directory."""

    workdir: Path
    model: Path
    dataset: Path
    config: Path


class ArtifactTampered(Exception):
    """A stored artifact whose bytes no longer hash to its id."""


def private_copy(storage: Storage, kind: ArtifactKind, artifact_id: str, dest: Path) -> None:
    """Copy an artifact to ``dest`` as a file of its own (never a hard link to the stored bytes,
    which the analysis process could otherwise rewrite for every other job using them), checking
    on the way that the copy's sha256 is the artifact's id (ids are content hashes).

    Raises ``FileNotFoundError`` when it is gone and :class:`ArtifactTampered` (``dest`` removed)
    when its bytes changed since it was stored."""
    link = dest.with_name(dest.name + ".fetched")
    storage.fetch(kind, artifact_id, link)
    digest = hashlib.sha256()
    try:
        with open(link, "rb") as source, open(dest, "wb") as target:
            while block := source.read(1 << 20):
                digest.update(block)
                target.write(block)
    finally:
        link.unlink(missing_ok=True)
    if digest.hexdigest() != artifact_id:
        dest.unlink(missing_ok=True)
        raise ArtifactTampered(
            f"the stored {kind} {artifact_id[:12]}… no longer hashes to its id "
            f"(sha256 {digest.hexdigest()[:12]}…): it was changed after it was uploaded"
        )


def fetch_inputs(ctx: WorkerContext, record: JobRecord, workdir: Path) -> JobInputs:
    """The job's inputs copied into ``workdir``; ``FileSystemStorage`` raises FileNotFoundError."""
    inputs = JobInputs(
        workdir=workdir,
        model=workdir / f"model{_SUFFIX.get(record.model_format, '')}",
        dataset=workdir / f"dataset{_SUFFIX.get(record.dataset_format, '')}",
        config=workdir / "config.json",
    )
    private_copy(ctx.storage, "model", record.model_id, inputs.model)
    private_copy(ctx.storage, "dataset", record.dataset_id, inputs.dataset)
    inputs.config.write_text(record.config)
    return inputs
