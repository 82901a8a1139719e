"""Death in the flat regions of piecewise-linear activations, from the region patterns alone.

A region of Γ is *flat* when the activation is constant on all of it, so no gradient flows through
a neuron whose value lies there: ReLU's ``(-inf, 0]``, ReLU6's and Hardtanh's two saturated ends,
HardSigmoid's ``(-inf, -3]`` and ``[3, inf)``, HardSwish's ``(-inf, -3]``. Two measures follow:

- a neuron is *rarely active* when its value lies outside the flat regions for fewer than 1 % of
  the inputs (*never active*: for none of them, a dead ReLU in the usual sense);
- a *dead data point* (Rister & Rubin) is an input for which some layer has every neuron in a flat
  region: nothing that input does reaches the layers above it through gradients.

Only pre-activation space with the op's own kinks gives flat regions; in post space or for smooth
activations :func:`flat_regions` returns an empty list and the layer has no flat death.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuronscope.contracts.post_space import hard_sigmoid_kinks
from worker.engine.metrics._checks import check_patterns, require
from worker.engine.metrics._cpu import column_counts, zeros

#: Pre-activation intervals on which each op type is constant (closed ends; inf for unbounded).
FLAT_INTERVALS: dict[str, tuple[tuple[float, float], ...]] = {
    "relu": ((-math.inf, 0.0),),
    "relu6": ((-math.inf, 0.0), (6.0, math.inf)),
    "hardtanh": ((-math.inf, -1.0), (1.0, math.inf)),
    "hard_sigmoid": ((-math.inf, -3.0), (3.0, math.inf)),
    "hardswish": ((-math.inf, -3.0),),
}
#: A neuron outside its flat regions for fewer than this share of inputs is rarely active.
RARELY_ACTIVE = 0.01


def flat_intervals(
    op_type: str, params: Mapping[str, float] | None = None
) -> tuple[tuple[float, float], ...]:
    """The intervals on which ``op_type`` is constant; a HardSigmoid's from its own alpha and beta.

    Example:
        >>> flat_intervals("hard_sigmoid", {"alpha": 0.2, "beta": 0.5})
        ((-inf, -2.5), (2.5, inf))
    """
    if op_type == "hard_sigmoid" and params:
        low, high = hard_sigmoid_kinks(params)
        return ((-math.inf, low), (high, math.inf))
    return FLAT_INTERVALS.get(op_type, ())


def flat_regions(
    op_type: str,
    breakpoints: Sequence[float],
    space: str = "pre",
    params: Mapping[str, float] | None = None,
) -> list[int]:
    """Indices of the regions ``(γ_{i-1}, γ_i]`` of ``breakpoints`` on which ``op_type`` (with its
    own ``params``) is constant.

    Example:
        >>> flat_regions("relu", [0.0]), flat_regions("relu6", [0.0, 6.0]), flat_regions("sigmoid", [0.0])
        ([0], [0, 2], [])
        >>> flat_regions("relu", [-1.0, 0.0, 1.0]), flat_regions("relu", [0.0], space="post")
        ([0, 1], [])
    """
    if space != "pre":
        return []
    bounds = [-math.inf, *breakpoints, math.inf]
    return [
        region
        for region in range(len(breakpoints) + 1)
        if any(
            low <= bounds[region] and bounds[region + 1] <= high
            for low, high in flat_intervals(op_type, params)
        )
    ]


@dataclass(frozen=True)
class LayerFlatStats:
    """One layer's flat-region death; counts are 0 when the layer has no flat region."""

    flat_regions: list[int]
    rarely_active_count: int
    never_active_count: int


@dataclass(frozen=True)
class FlatSummary:
    samples: int
    #: Inputs for which at least one layer has every neuron in a flat region.
    dead_data_points: int
    layers: list[LayerFlatStats]


class FlatCounts:
    """Per neuron, the samples outside its layer's flat regions, and the dead data points; fed
    batch by batch, merged by addition (:meth:`merge`).

    Example:
        >>> counts = FlatCounts(neurons=[2], flat=[[0]])
        >>> counts.update([torch.tensor([[0, 0], [1, 0], [0, 0]], dtype=torch.uint8)])
        >>> summary = counts.result()
        >>> summary.dead_data_points, summary.layers[0].never_active_count
        (2, 1)
    """

    def __init__(
        self, neurons: Sequence[int], flat: Sequence[Sequence[int]], *, device: torch.device | str = "cpu"
    ) -> None:
        require(
            len(neurons) == len(flat) and len(neurons) > 0,
            f"expected one flat-region list per layer and at least one layer, got {len(neurons)} layers "
            f"and {len(flat)} lists",
        )
        self.neurons = tuple(int(m) for m in neurons)
        self.flat = tuple(sorted({int(r) for r in regions}) for regions in flat)
        self.device = torch.device(device)
        self.samples = 0
        self.dead_data_points = 0
        self._active = [zeros((m,), torch.int64, self.device) for m in self.neurons]

    def update(self, patterns: Sequence[torch.Tensor]) -> None:
        """Add one batch: per layer ``[b, M_l]`` uint8 region indices."""
        batch = check_patterns(patterns, self.neurons)
        dead_point = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for layer, regions in enumerate(patterns):
            if not self.flat[layer]:
                continue
            here = regions.to(self.device)
            if here.device.type == "cpu":
                values = here.contiguous().numpy()
                flat = values == self.flat[layer][0]
                for region in self.flat[layer][1:]:
                    flat |= values == region
                outside = values.shape[0] - column_counts(flat)
                self._active[layer].numpy()[:] += outside
                dead_point |= torch.from_numpy(flat.all(1))
                continue
            in_flat = here == self.flat[layer][0]
            for region in self.flat[layer][1:]:
                in_flat |= here == region
            self._active[layer] += here.shape[0] - in_flat.sum(0)
            dead_point |= in_flat.all(1)
        self.dead_data_points += int(dead_point.sum())
        self.samples += batch

    def merge(self, other: FlatCounts) -> None:
        """Add another accumulator's counts (same layers and flat regions) into this one."""
        require(
            other.neurons == self.neurons and other.flat == self.flat,
            f"merge: expected counts of layers with neurons {self.neurons} and flat regions {self.flat}, "
            f"got {other.neurons} and {other.flat}",
        )
        for mine, theirs in zip(self._active, other._active, strict=True):
            mine += theirs.to(self.device)
        self.samples += other.samples
        self.dead_data_points += other.dead_data_points

    def state(self) -> dict[str, np.ndarray]:
        """Everything accumulated, as arrays (``samples``, ``dead_data_points``, ``active{l}``);
        :meth:`from_state` rebuilds the accumulator."""
        arrays = {
            "samples": np.asarray(self.samples, dtype=np.int64),
            "dead_data_points": np.asarray(self.dead_data_points, dtype=np.int64),
        }
        arrays.update({f"active{layer}": a.cpu().numpy() for layer, a in enumerate(self._active)})
        return arrays

    @classmethod
    def from_state(
        cls,
        neurons: Sequence[int],
        flat: Sequence[Sequence[int]],
        state: Mapping[str, np.ndarray],
        *,
        device: torch.device | str = "cpu",
    ) -> FlatCounts:
        """The accumulator :meth:`state` described (checked against the layers' widths)."""
        counts = cls(neurons, flat, device=device)
        for layer, width in enumerate(counts.neurons):
            found = np.asarray(state[f"active{layer}"])
            require(
                found.shape == (width,) and found.dtype == np.int64,
                f"state: expected active{layer} int64 [{width}], got {found.dtype} {list(found.shape)}",
            )
            counts._active[layer] = torch.from_numpy(found.copy()).to(counts.device)
        counts.samples = int(state["samples"])
        counts.dead_data_points = int(state["dead_data_points"])
        return counts

    def active_counts(self, layer: int) -> torch.Tensor:
        """``[M_l]`` int64 samples outside the flat regions, per neuron (all samples when none)."""
        if not self.flat[layer]:
            return torch.full((self.neurons[layer],), self.samples, dtype=torch.int64)
        return self._active[layer].cpu()

    def result(self) -> FlatSummary:
        require(self.samples > 0, "flat regions: expected at least one sample, got none")
        layers = []
        for layer in range(len(self.neurons)):
            active = self.active_counts(layer)
            layers.append(
                LayerFlatStats(
                    flat_regions=list(self.flat[layer]),
                    rarely_active_count=int((active < RARELY_ACTIVE * self.samples).sum()),
                    never_active_count=int((active == 0).sum()),
                )
            )
        return FlatSummary(samples=self.samples, dead_data_points=self.dead_data_points, layers=layers)


__all__ = ["FLAT_INTERVALS", "FlatCounts", "FlatSummary", "flat_regions"]
