"""Validation of untrusted uploads (datasets, ONNX models, TorchScript and ``.pt2`` archives) before use.

Imports only numpy, onnx and the standard library, so the API process can use it; nothing here
runs a model. Every failure is an :class:`~neuronscope.errors.InvalidInput` (HTTP 422) with a
specific ``code``.
"""

from neuronscope.validation.dataset import (
    ArrayHeader,
    DatasetArrays,
    DatasetHeader,
    check_dataset_fits_model,
    inspect_dataset,
    load_dataset,
)
from neuronscope.validation.exported_program import ExportedProgramSummary, check_exported_program_archive
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.model_format import (
    CODE_FORMATS,
    ModelFormat,
    check_model_file,
    detect_model_format,
)
from neuronscope.validation.onnx_model import (
    ALLOWED_DOMAINS,
    OnnxModelSummary,
    check_onnx_model,
    parse_onnx_file,
)
from neuronscope.validation.specs import Dim, InputDescription, InputLike, ModelInput, as_model_input
from neuronscope.validation.torchscript import TorchScriptSummary, check_torchscript_archive

__all__ = [
    "ALLOWED_DOMAINS",
    "CODE_FORMATS",
    "DEFAULT_LIMITS",
    "ArrayHeader",
    "DatasetArrays",
    "DatasetHeader",
    "Dim",
    "ExportedProgramSummary",
    "InputDescription",
    "InputLike",
    "Limits",
    "ModelFormat",
    "ModelInput",
    "OnnxModelSummary",
    "TorchScriptSummary",
    "as_model_input",
    "check_dataset_fits_model",
    "check_exported_program_archive",
    "check_model_file",
    "check_onnx_model",
    "check_torchscript_archive",
    "detect_model_format",
    "inspect_dataset",
    "load_dataset",
    "parse_onnx_file",
]
