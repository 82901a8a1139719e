"""Every kind of neuron death as its authors define it, from per-neuron values accumulated batch by
batch in the capture pass:

- **ReDo's τ-dormant units** (Sokar et al. 2023, eq. 1): a unit's score is its mean ``|h(x)|`` over
  the inputs divided by the mean of that over the layer's units; it is τ-dormant when the score is
  ``<= τ`` (τ = 0 is "never a non-zero output"). ``h`` is the activation's output (post space);
  a convolutional feature map is one unit, its ``|h|`` averaged over the map's positions.
- **Rarely positive neurons**: post-activation ``> 0`` on fewer than 1 % of the inputs. For the
  ReLU family this is "active" as dead-ReLU studies count it; for smooth activations it counts
  outputs above 0 (a sigmoid is never rarely positive, a tanh is when its input stays negative).
  The flat-region count of :mod:`worker.engine.metrics.flat` is the other definition (outside a
  region where the activation is constant); both are reported.
- **Neuron coverage** (Pei et al., DeepXplore 2017, Definition 1 and their code): per input, the
  layer's outputs are min-max scaled to [0, 1] over the layer (a constant layer scales to 0), a
  convolutional feature map's scaled values are averaged over its positions; a unit is covered
  when that value exceeds ``t`` for at least one input. Coverage is covered units / units.

A unit is a neuron of a layer whose per-sample shape has rank 1 or 2 (dense, sequence and 1-d
maps: every element is a unit) and a channel of a rank >= 3 shape ``(C, spatial...)``: capture
flattens a sample channel-major, so channel ``c`` holds neurons ``c·S .. (c+1)·S - 1``.

Everything merges across capture blocks (:meth:`ValueAccumulator.combine`): counts, minima,
maxima and coverage maxima exactly; the float64 sums of per-batch ``|h|`` sums up to rounding (the order
of additions differs), which moves no reported count except at an exact tie with τ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.metrics._checks import describe, require
from worker.engine.metrics._cpu import column_counts, full, zeros

#: ReDo's dormancy thresholds τ reported (Sokar et al. use 0 and 0.025 on Atari, 0.1 on DeepMind Control).
DORMANT_TAUS = (0.0, 0.025, 0.1)
#: DeepXplore's neuron-coverage thresholds t reported; 0.25 is the headline one.
COVERAGE_THRESHOLDS = (0.0, 0.25, 0.5, 0.75)
#: A unit's largest scaled output is kept up to the largest threshold; above it, as 1 (covered at
#: every threshold, and no later batch needs to look at it).
_COVERED = 1.0
#: The headline τ and t, the report's ``dormant_fraction`` and ``coverage_fraction``.
DORMANT_TAU = 0.025
COVERAGE_THRESHOLD = 0.25
#: A neuron whose output is > 0 on fewer than this share of inputs is rarely positive.
RARELY_POSITIVE = 0.01


def units_of(shape: Sequence[int]) -> int:
    """Units of a layer whose per-sample activation map has ``shape``: channels of a rank >= 3
    map, else every neuron.

    Example:
        >>> units_of((256,)), units_of((16, 8, 8)), units_of((12, 64))
        (256, 16, 768)
    """
    neurons = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return int(shape[0]) if len(shape) >= 3 else neurons


@dataclass(frozen=True)
class LayerDeathStats:
    """One layer's death by every definition: ``dormant_counts[k]`` units dormant at
    ``DORMANT_TAUS[k]``, ``covered_counts[k]`` units covered at ``COVERAGE_THRESHOLDS[k]``."""

    units: int
    neurons: int
    dormant_counts: tuple[int, ...]
    covered_counts: tuple[int, ...]
    rarely_positive_count: int
    never_positive_count: int


@dataclass(frozen=True)
class ValueRange:
    """Smallest and largest value one neuron took: pre-activation, and in the analysis space."""

    pre_min: float
    pre_max: float
    space_min: float
    space_max: float


class ValueAccumulator:
    """Per neuron: min and max pre-activation (and post-activation when the analysis runs in post
    space), the sum of ``|post|`` (in the values' precision within a batch, float64 across
    batches) and the inputs with ``post > 0``; per unit, the largest DeepXplore-scaled output
    (1 once above the largest threshold: later batches skip the unit).
    Fed batch by batch with the values capture already holds, by reductions over the batch (no
    per-sample loop): about ten passes over each value.

    Holds ``20 · M_l + 4 · U_l`` bytes per layer (``28 · M_l + 4 · U_l`` in post space) on
    ``device``.

    Example:
        >>> values = ValueAccumulator(neurons=[3], units=[3])
        >>> pre = torch.tensor([[-1.0, 2.0, 0.5], [-2.0, 1.0, -0.5]])
        >>> values.update([pre], [pre.relu()])
        >>> stats = values.result()[0]
        >>> stats.dormant_counts, stats.covered_counts, stats.never_positive_count
        ((1, 1, 1), (2, 1, 1, 1), 1)
        >>> values.ranges(0, [0])[0]
        ValueRange(pre_min=-2.0, pre_max=-1.0, space_min=-2.0, space_max=-1.0)
    """

    def __init__(
        self,
        neurons: Sequence[int],
        units: Sequence[int],
        *,
        post_space: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        require(
            len(neurons) == len(units)
            and len(neurons) > 0
            and all(0 < u <= m and m % u == 0 for m, u in zip(neurons, units, strict=False)),
            f"expected per layer a unit count dividing its neuron count, at least one layer, got "
            f"neurons {list(neurons)} and units {list(units)}",
        )
        self.neurons = tuple(int(m) for m in neurons)
        self.units = tuple(int(u) for u in units)
        self.post_space = post_space
        self.device = torch.device(device)
        self.samples = 0
        self._pre_min = [full(m, math.inf, self.device) for m in self.neurons]
        self._pre_max = [full(m, -math.inf, self.device) for m in self.neurons]
        spans = [m if post_space else 0 for m in self.neurons]
        self._post_min = [full(m, math.inf, self.device) for m in spans]
        self._post_max = [full(m, -math.inf, self.device) for m in spans]
        self._abs_sum = [zeros((m,), torch.float64, self.device) for m in self.neurons]
        self._positive = [zeros((m,), torch.int32, self.device) for m in self.neurons]
        self._coverage = [full(u, -math.inf, self.device) for u in self.units]

    def update(self, pre: Sequence[torch.Tensor], post: Sequence[torch.Tensor]) -> None:
        """Add one batch: per layer ``[b, M_l]`` float pre- and post-activation values."""
        if not (
            len(pre) == len(post) == len(self.neurons)
            and all(
                p.ndim == 2 and p.shape[1] == m and q.shape == p.shape and p.is_floating_point()
                for p, q, m in zip(pre, post, self.neurons, strict=False)
            )
        ):
            require(
                False,
                f"expected per layer [b, M] float pre and post values with M in {list(self.neurons)}, "
                f"got pre {[describe(p) for p in pre]} and post {[describe(q) for q in post]}",
            )
        batch = int(pre[0].shape[0])
        if not batch:
            return
        for layer, (values, outputs) in enumerate(zip(pre, post, strict=True)):
            values, outputs = values.detach().to(self.device), outputs.detach().to(self.device)
            if self.device.type == "cpu":
                self._update_numpy(layer, _array(values), _array(outputs))
            else:
                self._update_torch(layer, values, outputs)
        self.samples += batch

    def _update_torch(self, layer: int, values: torch.Tensor, outputs: torch.Tensor) -> None:
        """:meth:`update` of one layer with fused torch reductions (accelerators)."""
        _fold_range(values, self._pre_min[layer], self._pre_max[layer])
        if self.post_space:
            _fold_range(outputs, self._post_min[layer], self._post_max[layer])
        self._abs_sum[layer] += outputs.abs().sum(0).double()
        self._positive[layer] += (outputs > 0).sum(0, dtype=torch.int32)
        coverage = self._coverage[layer]
        torch.maximum(coverage, _scaled_unit_max(outputs, self.units[layer]), out=coverage)
        coverage[coverage > COVERAGE_THRESHOLDS[-1]] = _COVERED

    def _update_numpy(self, layer: int, values: np.ndarray, outputs: np.ndarray) -> None:
        """:meth:`update` of one layer on the CPU, in numpy, single-threaded: torch's threaded
        reductions contend with a runtime's own worker threads (ONNX Runtime's spin after each
        run), which made them several times slower than the numpy loop here."""
        pre_min, pre_max = self._pre_min[layer].numpy(), self._pre_max[layer].numpy()
        np.minimum(pre_min, values.min(0), out=pre_min)
        np.maximum(pre_max, values.max(0), out=pre_max)
        if self.post_space:
            post_min, post_max = self._post_min[layer].numpy(), self._post_max[layer].numpy()
            np.minimum(post_min, outputs.min(0), out=post_min)
            np.maximum(post_max, outputs.max(0), out=post_max)
        low = outputs.min(1, keepdims=True)
        floor = float(low.min())
        abs_sum = self._abs_sum[layer].numpy()
        abs_sum += (outputs if floor >= 0 else np.abs(outputs)).sum(0)  # ReLU, sigmoid: |h| is h
        positive = self._positive[layer].numpy()
        if floor > 0:
            positive += outputs.shape[0]
        else:
            positive += column_counts(np.greater(outputs, 0))
        coverage = self._coverage[layer].numpy()
        units = self.units[layer]
        open_units = np.flatnonzero(coverage <= COVERAGE_THRESHOLDS[-1])
        if not open_units.size:
            return
        spread = outputs.max(1, keepdims=True) - low
        scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
        grouped = outputs.reshape(outputs.shape[0], units, -1)
        if open_units.size < units:
            grouped = grouped[:, open_units]
        scaled = np.subtract(grouped, low[:, :, None])
        scaled *= scale[:, :, None]
        best = scaled.mean(2, dtype=np.float32) if scaled.shape[2] > 1 else scaled[:, :, 0]
        found = np.maximum(coverage[open_units], best.max(0))
        found[found > COVERAGE_THRESHOLDS[-1]] = _COVERED
        coverage[open_units] = found

    def state(self) -> dict[str, np.ndarray]:
        """Everything accumulated as arrays (``units``, ``post_space``, ``samples`` and per layer
        ``{name}{l}``); :meth:`combine` joins such states."""
        arrays: dict[str, np.ndarray] = {
            "neurons": np.asarray(self.neurons, dtype=np.int64),
            "units": np.asarray(self.units, dtype=np.int64),
            "post_space": np.asarray(self.post_space),
            "samples": np.asarray(self.samples, dtype=np.int64),
        }
        for name, tensors in self._tensors().items():
            for layer, tensor in enumerate(tensors):
                arrays[f"{name}{layer}"] = tensor.cpu().numpy()
        return arrays

    @classmethod
    def combine(
        cls, states: Sequence[Mapping[str, np.ndarray]], *, device: torch.device | str = "cpu"
    ) -> ValueAccumulator:
        """The accumulator of sample ranges' :meth:`state` s (at least one, same layers).

        Example:
            >>> pre = torch.tensor([[-1.0, 2.0], [3.0, -0.5], [0.25, 1.0]])
            >>> parts = [ValueAccumulator([2], [2]) for _ in range(2)]
            >>> for part, rows in zip(parts, (slice(0, 2), slice(2, 3))):
            ...     part.update([pre[rows]], [pre[rows].relu()])
            >>> joined = ValueAccumulator.combine([p.state() for p in parts])
            >>> joined.samples, joined.ranges(0, [0, 1])[1].pre_max
            (3, 2.0)
        """
        require(len(states) > 0, "combine: expected at least one state, got none")
        first = states[0]
        joined = cls(
            [int(m) for m in first["neurons"]],
            [int(u) for u in first["units"]],
            post_space=bool(first["post_space"]),
            device=device,
        )
        mine = joined._tensors()
        for state in states:
            require(
                np.array_equal(state["neurons"], first["neurons"])
                and np.array_equal(state["units"], first["units"]),
                f"combine: expected states of layers with neurons {list(joined.neurons)} and units "
                f"{list(joined.units)}, got {state['neurons'].tolist()} and {state['units'].tolist()}",
            )
            joined.samples += int(state["samples"])
            for name, tensors in mine.items():
                for layer, tensor in enumerate(tensors):
                    part = torch.from_numpy(np.asarray(state[f"{name}{layer}"])).to(joined.device)
                    require(
                        part.shape == tensor.shape and part.dtype == tensor.dtype,
                        f"{name}{layer}: expected {tensor.dtype} {list(tensor.shape)}, got "
                        f"{part.dtype} {list(part.shape)}",
                    )
                    _MERGE[name](tensor, part)
        return joined

    def result(self) -> list[LayerDeathStats]:
        require(self.samples > 0, "neuron death: expected at least one sample, got none")
        return [self._layer_result(layer) for layer in range(len(self.neurons))]

    def unit_scores(self, layer: int) -> torch.Tensor:
        """``[U_l]`` float64 ReDo scores: each unit's mean ``|h|`` over the layer's mean (NaN when
        every output of the layer is 0)."""
        per_unit = self._abs_sum[layer].cpu().view(self.units[layer], -1).sum(1)
        return per_unit / per_unit.mean()

    def ranges(self, layer: int, neurons: Sequence[int]) -> list[ValueRange]:
        """The value ranges of ``neurons`` of ``layer`` (flat indices)."""
        index = torch.as_tensor(list(neurons), dtype=torch.int64, device=self.device)
        space_min, space_max = (
            (self._post_min[layer], self._post_max[layer])
            if self.post_space
            else (self._pre_min[layer], self._pre_max[layer])
        )
        columns = (
            torch.stack([self._pre_min[layer], self._pre_max[layer], space_min, space_max])[:, index]
            .double()
            .cpu()
            .T.tolist()
        )
        return [ValueRange(*row) for row in columns]

    def _layer_result(self, layer: int) -> LayerDeathStats:
        scores = self.unit_scores(layer)
        positive = self._positive[layer].cpu()
        coverage = self._coverage[layer].cpu()
        return LayerDeathStats(
            units=self.units[layer],
            neurons=self.neurons[layer],
            dormant_counts=tuple(
                int((scores <= tau).sum()) if bool(scores.isfinite().all()) else self.units[layer]
                for tau in DORMANT_TAUS
            ),
            covered_counts=tuple(int((coverage > t).sum()) for t in COVERAGE_THRESHOLDS),
            rarely_positive_count=int((positive < RARELY_POSITIVE * self.samples).sum()),
            never_positive_count=int((positive == 0).sum()),
        )

    def _tensors(self) -> dict[str, list[torch.Tensor]]:
        return {
            "pre_min": self._pre_min,
            "pre_max": self._pre_max,
            "post_min": self._post_min,
            "post_max": self._post_max,
            "abs_sum": self._abs_sum,
            "positive": self._positive,
            "coverage": self._coverage,
        }


def _array(values: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a contiguous float32 or float64 array (no copy when it already is one)."""
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    return values.contiguous().numpy()


def _fold_range(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
    """Fold ``[b, M]`` values into running ``[M]`` minima and maxima (NaN propagates)."""
    batch_low, batch_high = torch.aminmax(values, dim=0)
    torch.minimum(low, batch_low.to(low.dtype), out=low)
    torch.maximum(high, batch_high.to(high.dtype), out=high)


def _scaled_unit_max(outputs: torch.Tensor, units: int) -> torch.Tensor:
    """``[U]`` the largest DeepXplore-scaled output of each unit over ``[b, M]`` outputs: per row
    ``(h - min) / (max - min)`` (0 where the row is constant), averaged over a unit's positions."""
    low, high = torch.aminmax(outputs, dim=1, keepdim=True)
    spread = high - low
    scale = torch.where(spread > 0, 1.0 / spread, torch.zeros_like(spread))
    scaled = (outputs - low).mul_(scale)
    if units != outputs.shape[1]:
        scaled = scaled.view(outputs.shape[0], units, -1).mean(2)
    return scaled.amax(0).float()


def _into_min(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.minimum(mine, theirs, out=mine)


def _into_max(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.maximum(mine, theirs, out=mine)


def _into_sum(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    mine += theirs


_MERGE = {
    "pre_min": _into_min,
    "pre_max": _into_max,
    "post_min": _into_min,
    "post_max": _into_max,
    "abs_sum": _into_sum,
    "positive": _into_sum,
    "coverage": _into_max,
}


def region_distance(low: float, high: float, region: int, breakpoints: Sequence[float]) -> float:
    """How far values in ``[low, high]`` are from leaving region ``region`` = ``(γ_{r-1}, γ_r]``
    of ``breakpoints``: the gap to the nearer end, 0 when they touch or cross it, ``inf`` when the
    region is unbounded on both sides (no breakpoint).

    Example:
        >>> region_distance(-3.0, -0.5, 0, [0.0]), region_distance(-1.0, 2.0, 1, [0.0, 6.0])
        (0.5, 0.0)
    """
    bounds = [-math.inf, *breakpoints, math.inf]
    below, above = bounds[region], bounds[region + 1]
    return max(min(low - below, above - high), 0.0)


__all__ = [
    "COVERAGE_THRESHOLD",
    "COVERAGE_THRESHOLDS",
    "DORMANT_TAU",
    "DORMANT_TAUS",
    "RARELY_POSITIVE",
    "LayerDeathStats",
    "ValueAccumulator",
    "ValueRange",
    "region_distance",
    "units_of",
]
