"""Input checks shared by the metric modules; each failure is an ``AnalysisError`` that says what
was expected and what came in."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.engine.errors import AnalysisError

#: Code for a caller that broke a metric function's contract (shapes, dtypes, call order).
CONTRACT = "analysis_error"


def require(condition: bool, message: str, *, code: str = CONTRACT) -> None:
    if not condition:
        raise AnalysisError(message, code=code)


def describe(tensor: torch.Tensor) -> str:
    return f"shape {list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def widths(patterns: Sequence[torch.Tensor]) -> list[int]:
    """Last-dimension sizes, -1 for a 0-d tensor: the neuron counts a batch of patterns claims."""
    return [int(t.shape[-1]) if t.ndim else -1 for t in patterns]


def check_patterns(
    patterns: Sequence[torch.Tensor], neurons: Sequence[int], *, what: str = "patterns"
) -> int:
    """Check per-layer ``[b, M_l]`` uint8 region indices with one shared ``b``; return ``b``."""
    require(
        len(patterns) == len(neurons) and len(patterns) > 0,
        f"{what}: expected one tensor per layer ({len(neurons)}, at least 1), got {len(patterns)}",
    )
    batch = -1
    for layer, (tensor, width) in enumerate(zip(patterns, neurons, strict=True)):
        require(
            tensor.dtype == torch.uint8 and tensor.ndim == 2 and tensor.shape[1] == width,
            f"{what}[{layer}]: expected [b, {width}] uint8 region indices, got {describe(tensor)}",
        )
        if batch < 0:
            batch = int(tensor.shape[0])
        require(
            tensor.shape[0] == batch,
            f"{what}[{layer}]: expected {batch} rows like layer 0, got {tensor.shape[0]}",
        )
    return max(batch, 0)
