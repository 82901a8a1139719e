"""Start-up self-check of a GPU worker (``NEURONSCOPE_DEVICE=cuda``): both runtimes must see the device.

torch must see a CUDA device, and onnxruntime must not only list its ``CUDAExecutionProvider`` but
keep it for a session: onnxruntime-gpu loads its CUDA libraries when the first session is created and
silently falls back to the CPU when one is missing. That is what a CUDA-12 build of onnxruntime-gpu
does next to torch's CUDA-13 wheels, which bring ``libcublasLt.so.13`` but not ``libcublasLt.so.12``;
install a matching pair (``scripts/install.sh --gpu``: onnxruntime-gpu >= 1.27, built for CUDA 13,
with torch from PyTorch's cu130 index).

The check runs in the worker's main process from Celery's ``worker_init`` signal
(:mod:`worker.celery_app`), before any pool exists. It initialises CUDA there, which is why a GPU
worker runs Celery's solo pool (:meth:`worker.celery_app.worker_config`): a forked child of a process
with an initialised CUDA context cannot use the device. The analysis processes are unaffected: the
launcher they fork from (:mod:`worker.child.zygote`) is a fresh interpreter that only imports torch.
"""

from __future__ import annotations

import logging

from neuronscope.settings import Settings

CUDA_EP = "CUDAExecutionProvider"
INSTALL_HINT = (
    "install the matching pair with scripts/install.sh --gpu (torch from the cu130 index and "
    "onnxruntime-gpu>=1.27, both CUDA 13), or start the worker with NEURONSCOPE_DEVICE=cpu"
)

_log = logging.getLogger(__name__)


class DeviceCheckError(RuntimeError):
    """A GPU worker's runtimes cannot use the device; the message says which and why."""


def torch_cuda_problem() -> str | None:
    """Why torch cannot run on CUDA here, or ``None`` when it sees at least one device."""
    import torch

    if torch.cuda.is_available():
        return None
    built = torch.version.cuda or "none (a CPU-only build)"
    return f"torch {torch.__version__} sees no CUDA device (its CUDA version: {built})"


def ort_cuda_problem() -> str | None:
    """Why onnxruntime cannot run on CUDA here, or ``None`` when a session keeps the CUDA provider."""
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if CUDA_EP not in available:
        return (
            f"onnxruntime {ort.__version__} has no {CUDA_EP} (providers: {available}); the CPU package "
            "'onnxruntime' is installed instead of 'onnxruntime-gpu'"
        )
    kept = _probe_session_providers()
    if CUDA_EP not in kept:
        return (
            f"onnxruntime {ort.__version__} lists {CUDA_EP}, but a session fell back to {kept}: its CUDA "
            "libraries did not load (a CUDA-12 onnxruntime-gpu next to CUDA-13 torch fails on "
            "libcublasLt.so.12)"
        )
    return None


def _probe_session_providers() -> list[str]:
    """The providers a one-node session (``Identity`` on ``[1]`` float) keeps when asked for CUDA."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    result = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value], [result])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=[CUDA_EP, "CPUExecutionProvider"]
    )
    return list(session.get_providers())


def device_problems() -> list[str]:
    """Everything that keeps this process from running analyses on CUDA (empty: ready)."""
    return [problem for problem in (torch_cuda_problem(), ort_cuda_problem()) if problem is not None]


def check_device(settings: Settings) -> None:
    """Raise :class:`DeviceCheckError` when ``settings.device`` is ``"cuda"`` and a runtime cannot use
    the device; other devices need no check."""
    if settings.device != "cuda":
        return
    problems = device_problems()
    if problems:
        raise DeviceCheckError(
            "NEURONSCOPE_DEVICE=cuda: expected torch and onnxruntime to see a CUDA device, but "
            + "; ".join(problems)
            + f". {INSTALL_HINT}."
        )


def refuse_unless_device_ready(settings: Settings) -> None:
    """:func:`check_device` for the worker's start-up: on failure, log the reason and exit with it.

    ``SystemExit`` because Celery logs and swallows an ``Exception`` raised by a signal handler, and a
    GPU worker that would run everything on the CPU must not start.
    """
    try:
        check_device(settings)
    except DeviceCheckError as exc:
        _log.error("%s", exc)
        raise SystemExit(f"neuronscope worker refused to start: {exc}") from exc
