"""Spearman rank correlation in torch, with average ranks for ties."""

from __future__ import annotations

import math

import torch

from worker.engine.metrics._checks import describe, require


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two ``[P]`` real tensors (ties get their average rank).

    Returns NaN when it is undefined: fewer than 2 points, a constant input, or a NaN value.

    Example:
        >>> spearman(torch.tensor([1.0, 2.0, 2.0, 5.0]), torch.tensor([3, 1, 4, 9]))
        0.6324555320336759
        >>> spearman(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]))
        nan
    """
    require(
        x.ndim == 1 and x.shape == y.shape and not x.is_complex() and not y.is_complex(),
        f"x, y: expected two real [P] tensors of one length, got {describe(x)} and {describe(y)}",
    )
    if x.numel() < 2 or bool(_has_nan(x)) or bool(_has_nan(y)):
        return math.nan
    return _pearson(average_ranks(x), average_ranks(y))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ``[P]`` float64 ranks of ``[P]`` values, ties sharing their average rank.

    Example:
        >>> average_ranks(torch.tensor([10, 30, 20, 30]))
        tensor([1.0000, 3.5000, 2.0000, 3.5000], dtype=torch.float64)
    """
    ordered, order = torch.sort(values, stable=True)
    _, group, sizes = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    group_end = sizes.cumsum(0).to(torch.float64)
    group_rank = group_end - (sizes.to(torch.float64) - 1) / 2
    ranks = torch.empty(values.numel(), dtype=torch.float64, device=values.device)
    ranks[order] = group_rank[group]
    return ranks


def _has_nan(values: torch.Tensor) -> torch.Tensor:
    return torch.isnan(values).any() if values.is_floating_point() else torch.tensor(False)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a - a.mean()
    b = b - b.mean()
    scale = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if scale == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float((a * b).sum()) / scale))
