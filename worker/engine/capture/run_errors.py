"""What a failed model run means: one ``AnalysisError`` whose code names the cause.

An exception raised while onnxruntime or TorchScript runs a batch is one of three things:

- ``out_of_memory``: an allocation failed (``MemoryError``, ``std::bad_alloc``, onnxruntime's
  "Failed to allocate memory", torch's "can't allocate memory", CUDA out of memory);
- ``dataset_shape_mismatch``: a kernel refused the shapes it was given (MatMul dimension mismatch,
  a Reshape that does not fit, tensors that do not broadcast), i.e. the dataset's samples are not
  the shape the model was built for;
- ``model_runtime_error``: anything else a kernel or the model itself raised (an index out of
  range, a model's own ``raise``).

The message never carries the exception's text: that text can hold strings the model controls
(node names, a TorchScript model's source lines and its own exception messages) and so could carry
data out of the analysis process. It names the runtime's error class, the status onnxruntime
reports and the operator that failed when the runtime states them, and the input shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from neuronscope.validation._zip import quote
from worker.engine.errors import AnalysisError

_ALLOCATION = (
    "bad_alloc",
    "alloc failed",
    "failed to allocate memory",
    "can't allocate memory",
    "cannot allocate memory",
    "out of memory",
)
_SHAPE = (
    "shape",
    "dimension",
    "broadcast",
    "cannot be reshaped",
    "must match the size",
    "size mismatch",
    "channels, but got",
    "input of size",
)
#: onnxruntime's own framing: "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while
#: running MatMul node. Name:'...' Status Message: ..."; only these generated parts are used.
_ORT_STATUS = re.compile(r"^\[ONNXRuntimeError\] : \d+ : ([A-Z_]{1,40}) :")
_ORT_OP = re.compile(
    r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]{1,40} : "
    r"Non-zero status code returned while running ([A-Za-z][A-Za-z0-9_]{0,63}) node\."
)
_MAX_INPUTS = 8


def _runtime_text(exc: BaseException) -> str:
    """The part of the message the runtime wrote about the failure: for onnxruntime, what follows
    the node's (model-chosen) name; for a TorchScript error, its last line (the lines above it are
    the model's source)."""
    text = str(exc).strip()
    text = text.rsplit("\n", 1)[-1] if "\n" in text else text
    return text.split(" Status Message: ", 1)[1] if " Status Message: " in text else text


def is_allocation_failure(exc: BaseException) -> bool:
    """``MemoryError``, or a runtime's report that an allocation failed."""
    if isinstance(exc, MemoryError):
        return True
    text = _runtime_text(exc).lower()
    return any(marker in text for marker in _ALLOCATION)


def _is_model_raise(exc: BaseException) -> bool:
    """A TorchScript model's own ``raise`` (``torch.jit.Error``): its text is the model's."""
    return type(exc).__module__ == "torch.jit" and type(exc).__name__ == "Error"


def _is_shape_error(exc: BaseException) -> bool:
    if _is_model_raise(exc):
        return False
    text = _runtime_text(exc).lower()
    return any(marker in text for marker in _SHAPE)


def _cause(exc: BaseException) -> str:
    """``onnxruntime Fail (status FAIL, in a MatMul node)`` or ``torch RuntimeError``."""
    module = type(exc).__module__
    runtime = "onnxruntime" if module.startswith("onnxruntime") else module.split(".")[0]
    cause = f"{runtime} {type(exc).__name__}"
    text = str(exc)
    details = []
    if (status := _ORT_STATUS.match(text)) is not None:
        details.append(f"status {status.group(1)}")
    if (op := _ORT_OP.match(text)) is not None:
        details.append(f"in a {op.group(1)} node")
    return f"{cause} ({', '.join(details)})" if details else cause


def _shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    items = [f"{quote(name, 40)}: {list(shape)}" for name, shape in list(shapes.items())[:_MAX_INPUTS]]
    more = f", and {len(shapes) - _MAX_INPUTS} more" if len(shapes) > _MAX_INPUTS else ""
    return "{" + ", ".join(items) + more + "}"


def out_of_memory(exc: BaseException, what: str) -> AnalysisError | None:
    """``AnalysisError(out_of_memory)`` when ``exc`` is an allocation failure while ``what`` (e.g.
    "loading the model") ran, else ``None``: for the steps before a batch runs."""
    if not is_allocation_failure(exc):
        return None
    return AnalysisError(
        f"the analysis ran out of memory {what} ({_cause(exc)}); raise the memory limit "
        "(NEURONSCOPE_JOB_MEMORY_LIMIT_MB) or use a smaller model",
        code="out_of_memory",
    )


def run_failure(exc: BaseException, what: str, shapes: Mapping[str, Sequence[int]]) -> AnalysisError:
    """The ``AnalysisError`` for ``exc``, raised while the model ran ``what`` (e.g. "the example
    batch") on inputs of ``shapes``."""
    inputs = _shapes(shapes)
    cause = _cause(exc)
    if is_allocation_failure(exc):
        return AnalysisError(
            f"the model ran out of memory running {what} with input shapes {inputs} ({cause}); "
            "use a smaller batch_size, or raise the memory limit (NEURONSCOPE_JOB_MEMORY_LIMIT_MB)",
            code="out_of_memory",
        )
    if _is_shape_error(exc):
        return AnalysisError(
            f"the model could not run {what} with input shapes {inputs}: {cause} reports shapes that "
            "do not fit; expected samples of the shape the model was built for",
            code="dataset_shape_mismatch",
        )
    return AnalysisError(
        f"the model failed while running {what} with input shapes {inputs}: {cause}",
        code="model_runtime_error",
    )
