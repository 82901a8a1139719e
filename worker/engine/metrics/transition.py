"""Transition density (eq. 24–25, after Novak et al. 2018) along the segment between two inputs.

The segment x1 → x2 is cut into ``points = k + 1`` equidistant points; TD counts the consecutive
points whose full activation pattern (every analysed layer) differs, and ``neuron_changes`` counts
every (neuron, consecutive pair) whose region changes. Callers push the points through the model
in chunks (:func:`interpolation_points`) and feed the chunks' patterns to a
:class:`TransitionCounter`, or batch several whole short paths through :func:`path_transitions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from worker.engine.metrics._checks import check_patterns, describe, require, widths


def interpolation_points(
    x1: torch.Tensor, x2: torch.Tensor, points: int, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Points ``start..stop-1`` of ``points`` equidistant points from ``x1`` to ``x2``.

    Point ``i`` is ``x1 + (i / k) (x2 - x1)`` with ``k = points - 1``, computed by ``torch.lerp``
    so that point 0 is exactly ``x1`` and point ``k`` exactly ``x2``.

    Args:
        x1, x2: one input each (no batch dimension), same shape, floating dtype and device.
        points: ``k + 1 >= 2``.
        start, stop: ``0 <= start < stop <= points``; ``stop`` defaults to ``points``.

    Returns:
        ``[stop - start, *x1.shape]`` in ``x1``'s dtype and device.

    Example:
        >>> interpolation_points(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]), 5, 3)
        tensor([[0.7500, 2.5000],
                [1.0000, 3.0000]])
    """
    end = points if stop is None else stop
    require(
        x1.shape == x2.shape and x1.dtype == x2.dtype and x1.is_floating_point(),
        f"x1, x2: expected floating tensors of one shape and dtype, got {describe(x1)} and {describe(x2)}",
        code="dataset_invalid",
    )
    require(
        points >= 2 and 0 <= start < end <= points,
        f"expected points >= 2 and 0 <= start < stop <= points, got {points=}, {start=}, stop={end}",
    )
    steps = torch.arange(start, end, dtype=torch.float64) / (points - 1)
    if x1.device.type == "cpu":
        return torch.from_numpy(_lerp(x1.numpy(), x2.numpy(), steps.numpy().astype(x1.numpy().dtype)))
    weight = steps.to(dtype=x1.dtype, device=x1.device).reshape(-1, *([1] * x1.ndim))
    return torch.lerp(x1.unsqueeze(0), x2.unsqueeze(0), weight)


def _lerp(start: np.ndarray, end: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``torch.lerp``'s formula in numpy (single-threaded): ``start + w (end - start)`` for
    ``w < 0.5``, ``end - (end - start)(1 - w)`` otherwise, so both endpoints are exact."""
    difference = (end - start)[np.newaxis]
    shaped = weights.reshape(-1, *([1] * start.ndim))
    low = start[np.newaxis] + shaped * difference
    high = end[np.newaxis] - difference * (1 - shaped)
    points: np.ndarray = np.where(shaped < 0.5, low, high)
    return points


class TransitionCounter:
    """TD and neuron changes of one path, fed the patterns of its points in order, chunk by chunk.

    Holds only the last point's pattern, so memory does not grow with the number of points.

    Example:
        >>> counter = TransitionCounter()
        >>> counter.update([torch.tensor([[0, 1], [0, 1], [1, 1]], dtype=torch.uint8)])
        >>> counter.update([torch.tensor([[0, 0]], dtype=torch.uint8)])
        >>> counter.points, counter.transitions, counter.neuron_changes
        (4, 2, 3)
    """

    def __init__(self) -> None:
        self._last: list[torch.Tensor] = []
        self._transitions: torch.Tensor | int = 0
        self._neuron_changes: torch.Tensor | int = 0
        self.points = 0

    @property
    def transitions(self) -> int:
        """TD: consecutive point pairs whose full pattern differs."""
        return int(self._transitions)

    @property
    def neuron_changes(self) -> int:
        """Region changes summed over neurons and consecutive point pairs."""
        return int(self._neuron_changes)

    def update(self, patterns: Sequence[torch.Tensor]) -> None:
        """Feed the next ``b`` points: per layer ``[b, M_l]`` uint8 region indices."""
        neurons = widths(self._last) or widths(patterns)
        if not check_patterns(patterns, neurons):
            return
        changes = _step_changes(patterns)
        if self._last:
            joints = zip(self._last, patterns, strict=True)
            boundary = _step_changes([torch.cat([last, now[:1]]) for last, now in joints])
            changes = torch.cat([boundary, changes])
        self._transitions = self._transitions + (changes > 0).sum()
        self._neuron_changes = self._neuron_changes + changes.sum()
        self._last = [t[-1:].clone() for t in patterns]
        self.points += int(patterns[0].shape[0])

    def reset(self) -> None:
        """Forget everything: the next :meth:`update` starts a new path."""
        self._last = []
        self._transitions = 0
        self._neuron_changes = 0
        self.points = 0


def path_transitions(patterns: Sequence[torch.Tensor], points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TD and neuron changes of several whole paths laid back to back in one batch.

    Args:
        patterns: per layer ``[n_paths * points, M_l]`` uint8 region indices; rows
            ``p * points .. (p + 1) * points - 1`` are path ``p``'s points in order.
        points: points per path (``k + 1 >= 2``).

    Returns:
        (``[n_paths]`` int64 TD, ``[n_paths]`` int64 neuron changes) on the patterns' device.

    Example:
        >>> path_transitions([torch.tensor([[0], [1], [1], [0], [0], [0]], dtype=torch.uint8)], 3)
        (tensor([1, 0]), tensor([1, 0]))
    """
    batch = check_patterns(patterns, widths(patterns))
    require(
        points >= 2 and batch % points == 0,
        f"expected points >= 2 dividing the {batch} rows, got points={points}",
    )
    changes = _step_changes([layer.reshape(batch // points, points, layer.shape[1]) for layer in patterns])
    return (changes > 0).sum(1), changes.sum(1)


def _step_changes(sequence: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[..., b - 1]`` int64 region changes between consecutive points (dimension -2), summed over
    neurons and layers."""
    if sequence[0].device.type == "cpu":
        counted = None
        for layer in sequence:
            array = layer.contiguous().numpy()
            changed = np.count_nonzero(array[..., 1:, :] != array[..., :-1, :], axis=-1)
            counted = changed if counted is None else counted + changed
        return torch.from_numpy(np.asarray(counted, dtype=np.int64))
    total = (sequence[0][..., 1:, :] != sequence[0][..., :-1, :]).sum(-1)
    for layer in sequence[1:]:
        total += (layer[..., 1:, :] != layer[..., :-1, :]).sum(-1)
    return total
