"""Tell an uploaded model's format from its content, never from its name."""

from __future__ import annotations

import os
from typing import Literal

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import ZIP_MAGIC
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.onnx_model import OnnxModelSummary, check_onnx_model, parse_onnx_file
from neuronscope.validation.torchscript import TorchScriptSummary, check_torchscript_archive

ModelFormat = Literal["onnx", "torchscript"]


def _starts_with_zip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fp:
        return fp.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def detect_model_format(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> ModelFormat:
    """``"torchscript"`` for a zip (checked further by :func:`check_torchscript_archive`),
    ``"onnx"`` for bytes that parse as an ONNX ``ModelProto``; ``model_invalid`` otherwise."""
    if _starts_with_zip(path):
        return "torchscript"
    try:
        parse_onnx_file(path, limits)
    except InvalidInput as exc:
        if exc.code != "model_invalid":
            raise
        raise InvalidInput(
            f"model: expected an ONNX model or a TorchScript archive (zip), got neither ({exc.message})",
            code="model_invalid",
        ) from exc
    return "onnx"


def check_model_file(
    path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS
) -> OnnxModelSummary | TorchScriptSummary:
    """Detect the format and run that format's checks, parsing the file once."""
    if _starts_with_zip(path):
        return check_torchscript_archive(path, limits)
    return check_onnx_model(path, limits)
