"""Which device a model runs on: ``"auto"``, ``"cpu"`` or ``"cuda"`` (optionally ``"cuda:N"``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.errors import AnalysisError

_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"


def _parse(requested: str) -> str:
    kind = requested.split(":", 1)[0]
    if kind not in ("auto", "cpu", "cuda") or (kind != "cuda" and ":" in requested):
        raise AnalysisError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}",
            code="device_unavailable",
        )
    if ":" in requested and not requested.split(":", 1)[1].isdigit():
        raise AnalysisError(
            f"device: expected 'cuda:N' with an integer N, got {requested!r}", code="device_unavailable"
        )
    return kind


def torch_device(requested: str) -> torch.device:
    """The torch device for ``requested``: ``"auto"`` is CUDA when torch sees a GPU, else CPU.

    Raises ``AnalysisError(code="device_unavailable")`` for ``"cuda"`` on a machine without one.
    """
    kind = _parse(requested)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if kind == "auto":
            return torch.device("cpu")
        raise AnalysisError(
            f"device: expected a CUDA device for {requested!r}, but torch {torch.__version__} sees none",
            code="device_unavailable",
        )
    if kind == "auto":
        return torch.device("cuda")
    device = torch.device(requested)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise AnalysisError(
            f"device: expected a CUDA index below {torch.cuda.device_count()}, got {requested!r}",
            code="device_unavailable",
        )
    return device


@dataclass(frozen=True)
class OrtPlacement:
    """Where an onnxruntime session runs: its providers (best first) and where results are returned."""

    providers: list[str | tuple[str, dict[str, str]]]
    device: torch.device


def ort_placement(requested: str, available_providers: list[str]) -> OrtPlacement:
    """Providers for ``requested`` given ``onnxruntime.get_available_providers()``.

    CUDA needs both onnxruntime's CUDAExecutionProvider (onnxruntime-gpu) and a torch CUDA device,
    because results come back as torch tensors on ``device``.
    """
    kind = _parse(requested)
    if kind == "cpu":
        return OrtPlacement([_CPU_EP], torch.device("cpu"))
    gpu_ready = _CUDA_EP in available_providers and torch.cuda.is_available()
    if not gpu_ready:
        if kind == "auto":
            return OrtPlacement([_CPU_EP], torch.device("cpu"))
        missing = (
            "onnxruntime-gpu's CUDAExecutionProvider" if _CUDA_EP not in available_providers else "torch CUDA"
        )
        raise AnalysisError(
            f"device: expected a CUDA device for {requested!r}, but {missing} is not available "
            f"(onnxruntime providers: {available_providers})",
            code="device_unavailable",
        )
    device = torch_device("cuda" if kind == "auto" else requested)
    options = {"device_id": str(device.index or 0)}
    return OrtPlacement([(_CUDA_EP, options), _CPU_EP], device)
