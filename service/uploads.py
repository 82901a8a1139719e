"""Storing an upload: stream it to a private temporary file, recognise its format, check it, publish it.

Nothing reaches storage (or a queue) until it passed :func:`check_artifact`. The deep checks of
model and dataset files live in ``neuronscope.validation`` (numpy and onnx only: no torch or
onnxruntime in the API process); this module wires them in and tells the format from the first
bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from neuronscope.confinement import host_confinement
from neuronscope.errors import InvalidInput
from neuronscope.settings import Settings
from neuronscope.storage import (
    ArtifactFormat,
    ArtifactInfo,
    ArtifactKind,
    StagedUpload,
    Storage,
    UploadTooLarge,
)
from neuronscope.validation import CODE_FORMATS, check_model_file, detect_model_format, inspect_dataset
from service.errors import PayloadTooLarge

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _describe_head(head: bytes) -> str:
    return f"bytes starting {head[:8]!r}" if head else "an empty file"


def detect_format(kind: ArtifactKind, staged: StagedUpload) -> ArtifactFormat:
    """The artifact's format from its first bytes (file names are not trusted)."""
    head = staged.head
    if staged.size == 0:
        raise InvalidInput(f"{kind}: expected a non-empty file, got 0 bytes", code=f"{kind}_invalid")
    if kind == "model":
        # A zip is told apart by its entries (torch.export.save or torch.jit.save), from its headers.
        return detect_model_format(staged.path) if head.startswith(_ZIP_MAGIC) else "onnx"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    raise InvalidInput(
        f"dataset: expected a NumPy .npz archive or .npy array, got {_describe_head(head)}",
        code="dataset_invalid",
    )


def check_artifact(path: Path, kind: ArtifactKind, fmt: ArtifactFormat, settings: Settings) -> int | None:
    """Refuse what the service must not store or run (raises ``InvalidInput`` → 422); a dataset's
    sample count, inspected once here and recorded with it."""
    if fmt in CODE_FORMATS and not settings.allow_torchscript:
        raise InvalidInput(
            f"model: PyTorch-format uploads ({fmt}: TorchScript and .pt2 are code) are switched off on "
            "this server (NEURONSCOPE_ALLOW_TORCHSCRIPT=false); export the model to ONNX",
            code="torchscript_disabled",
        )
    if kind == "model":
        refuse_unconfined_code(fmt, settings)
    return _run_validation(path, kind, fmt)


def refuse_unconfined_code(fmt: str, settings: Settings) -> None:
    """``sandbox_unavailable`` (→ 422) for a model that is code where this host cannot confine the
    process that would run it, unless the operator opted out."""
    if fmt not in CODE_FORMATS or settings.sandbox_allow_unconfined:
        return
    found = host_confinement()
    if not found.get("active"):
        raise InvalidInput(
            f"model: {fmt} models are code, and this server cannot confine the process that would run "
            f"them (confinement found: {found.get('mechanism', 'none')}); export the model to ONNX, or "
            "(trusted networks only) set NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true",
            code="sandbox_unavailable",
        )


def _run_validation(path: Path, kind: ArtifactKind, fmt: ArtifactFormat) -> int | None:
    """``neuronscope.validation``'s checks, from headers alone (no model runs, nothing is inflated);
    a dataset's sample count."""
    if kind == "dataset":
        return inspect_dataset(path).samples
    check_model_file(path)
    return None


def store_upload(
    storage: Storage, settings: Settings, source: BinaryIO, kind: ArtifactKind
) -> tuple[ArtifactInfo, bool]:
    """Stage, recognise, check and publish one upload; ``True`` when it was new."""
    try:
        staged = storage.stage(source, max_bytes=settings.max_upload_bytes)
    except UploadTooLarge as exc:
        raise PayloadTooLarge(
            f"{kind}: expected at most {settings.max_upload_mb} MiB (NEURONSCOPE_MAX_UPLOAD_MB), got more"
        ) from exc
    try:
        fmt = detect_format(kind, staged)
        samples = check_artifact(staged.path, kind, fmt, settings)
    except BaseException:
        staged.discard()
        raise
    return storage.commit(staged, kind, fmt, samples=samples)
