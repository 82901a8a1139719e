"""Storing an upload: stream it to a private temporary file, recognise its format, check it, publish it.

Nothing reaches storage (or a queue) until it passed :func:`check_artifact`. The deep checks of
model and dataset files live in ``neuronscope.validation`` (its own module); this one only wires
them in and recognises the format from the first bytes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

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
from service.errors import PayloadTooLarge

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _describe_head(head: bytes) -> str:
    return f"bytes starting {head[:8]!r}" if head else "an empty file"


def detect_format(kind: ArtifactKind, staged: StagedUpload) -> ArtifactFormat:
    """The artifact's format from its content (file names are not trusted)."""
    head = staged.head
    if staged.size == 0:
        raise InvalidInput(f"{kind}: expected a non-empty file, got 0 bytes", code=f"{kind}_invalid")
    if kind == "dataset":
        if head.startswith(_NPY_MAGIC):
            return "npy"
        if head.startswith(_ZIP_MAGIC):
            return "npz"
        raise InvalidInput(
            f"dataset: expected a NumPy .npz archive or .npy array, got {_describe_head(head)}",
            code="dataset_invalid",
        )
    if head.startswith(_ZIP_MAGIC):
        if _is_torchscript(staged.path):
            return "torchscript"
        raise InvalidInput(
            "model: got a zip archive that is not a TorchScript archive (expected an ONNX file or a "
            "torch.jit.save archive; torch.save checkpoints cannot be analysed)",
            code="model_invalid",
        )
    return "onnx"


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_artifact(path: Path, kind: ArtifactKind, fmt: ArtifactFormat, settings: Settings) -> None:
    """Refuse what the service must not store or run; raises ``InvalidInput`` (→ 422)."""
    if fmt == "torchscript" and not settings.allow_torchscript:
        raise InvalidInput(
            "model: TorchScript uploads are switched off on this server "
            "(NEURONSCOPE_ALLOW_TORCHSCRIPT=false); export the model to ONNX",
            code="torchscript_disabled",
        )
    _run_validation(path, kind, fmt)


def _run_validation(path: Path, kind: ArtifactKind, fmt: ArtifactFormat) -> None:
    """The seam for ``neuronscope.validation`` (upload checks written beside this module).

    It must not import torch or onnxruntime: the API process never loads them.
    """
    try:
        from neuronscope import validation  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    check = getattr(validation, "check_upload", None)
    if callable(check):
        check(path, kind, fmt)


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
        check_artifact(staged.path, kind, fmt, settings)
    except BaseException:
        staged.discard()
        raise
    return storage.commit(staged, kind, fmt)
