"""Tell an uploaded model's format from its content, never from its name."""

from __future__ import annotations

import os
from typing import Literal

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import ZIP_MAGIC
from neuronscope.validation.exported_program import (
    ExportedProgramSummary,
    archive_kind,
    check_exported_program_archive,
    model_zip_members,
)
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.onnx_model import OnnxModelSummary, check_onnx_model, parse_onnx_file
from neuronscope.validation.torchscript import TorchScriptSummary, check_torchscript_archive

ModelFormat = Literal["onnx", "torchscript", "pt2"]
#: Model formats that are code (loading them unpickles or runs scripted code): confined, refusable.
CODE_FORMATS: frozenset[str] = frozenset({"torchscript", "pt2"})


def _starts_with_zip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fp:
        return fp.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def detect_model_format(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> ModelFormat:
    """For a zip, ``"pt2"`` or ``"torchscript"`` by its entries (checked further by
    :func:`check_exported_program_archive` / :func:`check_torchscript_archive`); ``"onnx"`` for
    bytes that parse as an ONNX ``ModelProto``; ``model_invalid`` otherwise. A zip's structure is
    checked from its headers before its entries are trusted."""
    if _starts_with_zip(path):
        return archive_kind([info.orig_filename for info in model_zip_members(path, limits)])
    try:
        parse_onnx_file(path, limits)
    except InvalidInput as exc:
        if exc.code != "model_invalid":
            raise
        raise InvalidInput(
            "model: expected an ONNX model or a PyTorch archive (zip: torch.export.save or torch.jit.save), "
            f"got neither ({exc.message})",
            code="model_invalid",
        ) from exc
    return "onnx"


def check_model_file(
    path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS
) -> OnnxModelSummary | TorchScriptSummary | ExportedProgramSummary:
    """Detect the format and run that format's checks, parsing the file once."""
    if _starts_with_zip(path):
        if detect_model_format(path, limits) == "pt2":
            return check_exported_program_archive(path, limits)
        return check_torchscript_archive(path, limits)
    return check_onnx_model(path, limits)
