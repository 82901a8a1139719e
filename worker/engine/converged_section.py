"""The report paths of the converged TD (schema 1.2): ``transition_density.converged``, the
saturation flag and warning, and the per-pair converged counts of ``transition_density.samples``."""

from __future__ import annotations

import numpy as np
import torch

from neuronscope.contracts.report import ConvergedTransitionDensity, PairSampleRow, TdKindStats
from worker.engine.metrics.transition_limit import ADAPTIVE, EXACT, MIXED, LimitResult

#: TD at k counts as saturated when its mean over the paths is at least this share of k.
SATURATION = 0.9


def saturated(td: torch.Tensor, points: int) -> bool | None:
    """Whether the mean of ``[P]`` TD at ``points`` points is within 10 % of its most, k; None
    without paths."""
    if not td.numel():
        return None
    return float(td.double().mean()) >= SATURATION * (points - 1)


def saturation_warning(td: torch.Tensor, points: int, converged: bool) -> str:
    """The warning of a saturated TD at k, pointing at the converged count (or at turning it on)."""
    mean = float(td.double().mean())
    where = (
        "transition_density.converged holds the count as k grows without bound"
        if converged
        else 'set "transition_density": {"converged": true} for the count as k grows without bound'
    )
    return (
        f"transition density is saturated: its mean {mean:.1f} is within 10 % of its most, k = {points - 1}, "
        f"so it measures the number of points more than the network; {where}"
    )


def converged_section(
    limit: LimitResult, same_label: torch.Tensor, tolerance: float, max_points: int
) -> ConvergedTransitionDensity:
    """``transition_density.converged`` from the per-path counts and each pair's label kind ``[P]``."""
    td = torch.from_numpy(limit.td).double()
    changes = torch.from_numpy(limit.neuron_changes).double()
    methods = limit.methods
    return ConvergedTransitionDensity(
        mean=_mean(td),
        median=_median(td),
        std=float(td.std(unbiased=False)) if td.numel() else None,
        neuron_changes_mean=_mean(changes),
        per_pair_kind={
            "same_label": _kind(td, changes, same_label),
            "different_label": _kind(td, changes, ~same_label),
        },
        complete=bool(limit.complete.all()),
        pairs_complete=int(limit.complete.sum()),
        methods={
            "exact": int(np.count_nonzero(methods == EXACT)),
            "adaptive": int(np.count_nonzero(methods == ADAPTIVE)),
            "mixed": int(np.count_nonzero(methods == MIXED)),
        },
        points_evaluated=int(limit.points.sum()),
        bisected_steps=int(limit.bisected_steps.sum()),
        unresolved_steps=int(limit.unresolved.sum()),
        tolerance=tolerance,
        max_points_per_pair=max_points,
    )


def with_converged_rows(rows: list[PairSampleRow], limit: LimitResult) -> list[PairSampleRow]:
    """``rows`` (the first pairs, in order) with their converged TD and neuron changes."""
    return [
        row.model_copy(
            update={
                "td_converged": int(limit.td[k]),
                "neuron_changes_converged": int(limit.neuron_changes[k]),
            }
        )
        for k, row in enumerate(rows)
    ]


def _kind(td: torch.Tensor, changes: torch.Tensor, mask: torch.Tensor) -> TdKindStats:
    return TdKindStats(
        pairs=int(mask.sum()),
        mean=_mean(td[mask]),
        median=_median(td[mask]),
        neuron_changes_mean=_mean(changes[mask]),
    )


def _mean(values: torch.Tensor) -> float | None:
    return float(values.mean()) if values.numel() else None


def _median(values: torch.Tensor) -> float | None:
    if not values.numel():
        return None
    ordered = values.sort().values
    middle = ordered.numel() // 2
    return (
        float(ordered[middle]) if ordered.numel() % 2 else float((ordered[middle - 1] + ordered[middle]) / 2)
    )
