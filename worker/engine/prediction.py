"""Prediction distance: the Euclidean distance between the model outputs of each pair (Fig. 5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from worker.engine.metrics.pairs import AllPairs, PairLists, PairSets

_ROW_BLOCK = 1024


@dataclass(frozen=True)
class DistanceStats:
    """Mean and population std of the distances of one pair kind; NaN without pairs."""

    pairs: int
    mean: float
    std: float

    @classmethod
    def of(cls, total: float, total_sq: float, count: int) -> DistanceStats:
        if not count:
            return cls(0, math.nan, math.nan)
        mean = total / count
        return cls(count, mean, math.sqrt(max(total_sq / count - mean * mean, 0.0)))


@dataclass(frozen=True)
class DistanceSummary:
    random: DistanceStats
    same_label: DistanceStats
    different_label: DistanceStats


def pair_distances(outputs: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``[P]`` float64 Euclidean distances between ``outputs[i]`` and ``outputs[j]`` of ``[P, 2]`` pairs.

    ``outputs`` is ``[N, D]``.

    >>> pair_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0, 1]]))
    tensor([5.], dtype=torch.float64)
    """
    values = outputs.double()
    distances: torch.Tensor = torch.linalg.vector_norm(values[pairs[:, 0]] - values[pairs[:, 1]], dim=1)
    return distances


def distance_summary(outputs: torch.Tensor, pairs: PairSets) -> DistanceSummary:
    """Distance statistics per pair kind; ``AllPairs`` runs over row blocks of the distance matrix."""
    if isinstance(pairs, PairLists):
        kinds = [pair_distances(outputs, p) for p in (pairs.random, pairs.same_label, pairs.different_label)]
        return DistanceSummary(
            *(DistanceStats.of(float(d.sum()), float((d * d).sum()), int(d.numel())) for d in kinds)
        )
    return _all_pairs_summary(outputs.double(), pairs)


def _all_pairs_summary(outputs: torch.Tensor, pairs: AllPairs) -> DistanceSummary:
    n = outputs.shape[0]
    labels = pairs.labels.to(outputs.device)
    sums = torch.zeros(3, 2, dtype=torch.float64)
    counts = [0, 0, 0]
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        block = torch.cdist(outputs[start:stop], outputs)
        rows = torch.arange(start, stop, device=outputs.device).unsqueeze(1)
        upper = rows < torch.arange(n, device=outputs.device).unsqueeze(0)
        same = labels[start:stop].unsqueeze(1) == labels.unsqueeze(0)
        for kind, mask in enumerate((upper, upper & same, upper & ~same)):
            chosen = block[mask]
            sums[kind, 0] += chosen.sum().cpu()
            sums[kind, 1] += (chosen * chosen).sum().cpu()
            counts[kind] += int(mask.sum())
    random, same_label, different_label = (
        DistanceStats.of(float(sums[k, 0]), float(sums[k, 1]), counts[k]) for k in range(3)
    )
    return DistanceSummary(random, same_label, different_label)


def probabilities(outputs: torch.Tensor) -> tuple[torch.Tensor, bool] | None:
    """``[N, C]`` class probabilities of ``[N, C]`` outputs and whether softmax was applied: rows that
    are already probability vectors (non-negative, summing to 1 within 1e-4) stay as they are, others
    go through softmax. None for outputs that are not ``[N, C >= 2]``.

    >>> probabilities(torch.tensor([[0.0, 0.0]]))
    (tensor([[0.5000, 0.5000]], dtype=torch.float64), True)
    """
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return None
    values = outputs.double()
    if bool((values >= 0).all()) and bool(((values.sum(1) - 1).abs() <= 1e-4).all()):
        return values, False
    return torch.softmax(values, dim=1), True
