"""The converged transition count (:mod:`worker.engine.metrics.transition_limit`) on a model:
positions on the TD paths of an :class:`~worker.engine.interpolation.InterpolationSpace` pushed
through the model, coded per analysed layer.

Example (``space`` from :func:`~worker.engine.interpolation.interpolation_space`)::

    result = converged_counts(space, pairs, layers, config.transition_density, "pre", batch_size=256)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuronscope.contracts.config import TransitionDensityConfig
from worker.engine.interpolation import InterpolationSpace
from worker.engine.metrics.transition_limit import PIECEWISE_LINEAR, LimitResult, converged_transitions


@dataclass(frozen=True)
class CodedLayer:
    """One analysed layer: its op type, neurons ``M_l``, Γ and the coder from ``[B, M_l]`` values to
    uint8 regions."""

    op_type: str
    neurons: int
    breakpoints: Sequence[float]
    coder: Callable[[torch.Tensor], torch.Tensor]


def converged_counts(
    space: InterpolationSpace,
    pairs: torch.Tensor,
    layers: Sequence[CodedLayer],
    config: TransitionDensityConfig,
    value_space: str,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
) -> LimitResult:
    """Converged TD of the ``[P, 2]`` ``pairs``' paths in ``space``, starting from the TD-at-k grid
    (``config.points``): the exact walk when Γ applies to pre-activations of piecewise-linear layers
    only (in post space a flat region's values carry no slope to extrapolate), else adaptive."""
    rows = [(space.index[i], space.index[j]) for i, j in pairs.tolist()]
    starts = torch.as_tensor([a for a, _ in rows], dtype=torch.int64)
    stops = torch.as_tensor([b for _, b in rows], dtype=torch.int64)

    def evaluate(path: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = torch.from_numpy(path)
        batch = {
            name: _at(values[starts[index]], values[stops[index]], t)
            for name, values in space.endpoints.items()
        }
        far = torch.from_numpy(t * 2 >= 1.0)
        for name, values in space.nearest.items():
            batch[name] = values[torch.where(far, stops[index], starts[index]).to(values.device)]
        result = space.capture(batch)
        coded = result.pre if value_space == "pre" else result.post
        regions = [layer.coder(v) for v, layer in zip(coded, layers, strict=True)]
        return (
            torch.cat([v.reshape(v.shape[0], -1) for v in coded], 1).double().cpu().numpy(),
            torch.cat(regions, 1).cpu().numpy(),
        )

    exact = value_space == "pre" and all(layer.op_type in PIECEWISE_LINEAR for layer in layers)
    return converged_transitions(
        evaluate,
        int(pairs.shape[0]),
        [np.asarray(layer.breakpoints, dtype=np.float64) for layer in layers],
        [layer.neurons for layer in layers],
        exact=exact,
        grid=config.points,
        tolerance=config.converged_tolerance,
        max_points=config.points + config.converged_max_points,
        batch=batch_size,
        progress=progress,
    )


def _at(start: torch.Tensor, end: torch.Tensor, t: np.ndarray) -> torch.Tensor:
    """``[Q, ...]`` points at positions ``t`` ``[Q]`` between ``start`` and ``end`` ``[Q, ...]``, by the
    formula of :func:`~worker.engine.metrics.transition.interpolation_points` (exact endpoints)."""
    if start.device.type == "cpu":
        a, b = start.numpy(), end.numpy()
        w = t.astype(a.dtype).reshape(-1, *([1] * (a.ndim - 1)))
        difference = b - a
        return torch.from_numpy(np.where(w < 0.5, a + w * difference, b - difference * (1 - w)))
    weight = (
        torch.from_numpy(t).to(dtype=start.dtype, device=start.device).reshape(-1, *([1] * (start.ndim - 1)))
    )
    return torch.lerp(start, end, weight)
