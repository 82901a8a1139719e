"""Layer health, accumulated batch by batch: dead and dying neurons, region occupancy, and the
spread of pre- and post-activation values.

A neuron is dead when one region holds every sample, dying when its dominant region holds at least
``dying_threshold`` of the samples (dead neurons are dying too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from worker.engine.metrics._checks import check_patterns, describe, require
from worker.engine.metrics._cpu import column_counts, zeros

#: Above this many regions, per-region counts go through one scatter instead of a pass per region.
_LOOP_REGIONS = 16


@dataclass(frozen=True)
class LayerHealthStats:
    """Health of one layer over ``samples`` samples. Means and variances are population values over
    every (sample, neuron) value, NaN when a value was NaN."""

    samples: int
    neurons: int
    dead_count: int
    dying_count: int
    dead_neurons: list[int]
    dying_neurons: list[int]
    region_occupancy: list[float]
    pre_activation_mean: float
    pre_activation_var: float
    post_activation_mean: float
    post_activation_var: float

    @property
    def dead_fraction(self) -> float:
        return self.dead_count / self.neurons

    @property
    def dying_fraction(self) -> float:
        return self.dying_count / self.neurons


class HealthAccumulator:
    """Per-neuron region counts and value moments of every layer, fed batch by batch.

    Holds ``4 · regions[l] · neurons[l]`` bytes of counts per layer on ``device`` (at most 2^31 - 1
    samples).

    Example:
        >>> health = HealthAccumulator(neurons=[3], regions=[2])
        >>> values = torch.tensor([[-1.0, 2.0, 0.5], [-2.0, 1.0, -0.5]])
        >>> health.update([(values > 0).to(torch.uint8)], pre=[values], post=[values.relu()])
        >>> stats = health.result(dying_threshold=0.9, max_indices=10)[0]
        >>> stats.dead_neurons, stats.region_occupancy, stats.post_activation_mean
        ([0, 1], [0.5, 0.5], 0.5833333333333334)
    """

    def __init__(
        self, neurons: Sequence[int], regions: Sequence[int], *, device: torch.device | str = "cpu"
    ) -> None:
        require(
            len(neurons) == len(regions) and len(neurons) > 0,
            f"expected one region count per layer and at least one layer, got {len(neurons)} layers "
            f"and {len(regions)} region counts",
        )
        self.neurons = tuple(int(m) for m in neurons)
        self.regions = tuple(int(r) for r in regions)
        self.device = torch.device(device)
        self.samples = 0
        self._counts = [
            zeros((r, m), torch.int32, self.device) for m, r in zip(self.neurons, self.regions, strict=True)
        ]
        self._pre = [_Moments(self.device) for _ in self.neurons]
        self._post = [_Moments(self.device) for _ in self.neurons]
        #: float64 copy of one layer's batch on the CPU, shared by every layer and batch.
        self._scratch = np.empty(0, dtype=np.float64)

    def update(
        self, patterns: Sequence[torch.Tensor], pre: Sequence[torch.Tensor], post: Sequence[torch.Tensor]
    ) -> None:
        """Add one batch: per layer ``[b, M_l]`` uint8 region indices and float pre- and
        post-activation values of the same shape."""
        batch = check_patterns(patterns, self.neurons)
        for name, values in (("pre", pre), ("post", post)):
            require(
                len(values) == len(self.neurons)
                and all(
                    v.shape == p.shape and v.is_floating_point()
                    for v, p in zip(values, patterns, strict=False)
                ),
                f"{name}: expected one floating tensor per layer shaped like its patterns "
                f"({[list(p.shape) for p in patterns]}), got {[describe(v) for v in values]}",
            )
        for layer, regions in enumerate(patterns):
            _count_regions(self._counts[layer], regions.to(self.device))
            self._pre[layer].add(pre[layer], self._widened)
            self._post[layer].add(post[layer], self._widened)
        self.samples += batch

    def _widened(self, values: np.ndarray) -> np.ndarray:
        """``[n]`` float32 or float64 values as ``[n]`` float64, in a buffer reused by the next call."""
        if values.dtype == np.float64:
            return np.ascontiguousarray(values)
        if self._scratch.size < values.size:
            self._scratch = np.empty(values.size, dtype=np.float64)
        widened = self._scratch[: values.size]
        np.copyto(widened, values)
        return widened

    def state(self) -> dict[str, np.ndarray]:
        """Everything accumulated, as arrays: per layer ``counts{l}`` ``[R_l, M_l]`` int32 region
        counts (row 0 unused) and ``pre{l}`` / ``post{l}`` ``[k, 3]`` float64 per-batch moments
        (count, sum, sum of squares), plus ``samples``. :meth:`combine` joins such states."""
        arrays: dict[str, np.ndarray] = {"samples": np.asarray(self.samples, dtype=np.int64)}
        for layer, counts in enumerate(self._counts):
            arrays[f"counts{layer}"] = counts.cpu().numpy()
            for name, moments in (("pre", self._pre[layer]), ("post", self._post[layer])):
                arrays[f"{name}{layer}"] = np.asarray(moments.pieces, dtype=np.float64).reshape(-1, 3)
        return arrays

    @classmethod
    def combine(
        cls,
        neurons: Sequence[int],
        regions: Sequence[int],
        states: Sequence[Mapping[str, np.ndarray]],
        *,
        device: torch.device | str = "cpu",
    ) -> HealthAccumulator:
        """The accumulator of consecutive sample ranges' :meth:`state` s, in order: counts add up
        exactly and the per-batch moments are merged again in the same order, so the result is
        bit for bit the one a single pass over every batch gives.

        Example:
            >>> values = torch.tensor([[-1.0, 2.0], [3.0, -0.5], [0.25, 1.0]])
            >>> parts = [HealthAccumulator([2], [2]) for _ in range(2)]
            >>> for part, rows in zip(parts, (slice(0, 2), slice(2, 3))):
            ...     part.update([(values[rows] > 0).to(torch.uint8)], [values[rows]], [values[rows].relu()])
            >>> joined = HealthAccumulator.combine([2], [2], [p.state() for p in parts])
            >>> joined.samples, joined.result(0.9, 5)[0].pre_activation_mean
            (3, 0.7916666666666666)
        """
        joined = cls(neurons, regions, device=device)
        for state in states:
            joined.samples += int(state["samples"])
            for layer, counts in enumerate(joined._counts):
                part = torch.from_numpy(np.asarray(state[f"counts{layer}"]))
                require(
                    part.shape == counts.shape and part.dtype == torch.int32,
                    f"counts{layer}: expected an int32 array of shape {list(counts.shape)}, "
                    f"got {part.dtype} {list(part.shape)}",
                )
                counts += part.to(joined.device)
                for name, moments in (("pre", joined._pre[layer]), ("post", joined._post[layer])):
                    for count, total, squares in np.asarray(state[f"{name}{layer}"]).reshape(-1, 3).tolist():
                        moments.add_piece(int(count), total, squares)
        return joined

    def result(self, dying_threshold: float, max_indices: int) -> list[LayerHealthStats]:
        """Per-layer health; ``max_indices`` caps the listed dead / dying neuron indices (lowest first)."""
        require(self.samples > 0, "health: expected at least one sample, got none")
        require(
            0.0 < dying_threshold <= 1.0 and max_indices >= 0,
            f"expected 0 < dying_threshold <= 1 and max_indices >= 0, got {dying_threshold=}, {max_indices=}",
        )
        needed = math.ceil(Fraction(repr(float(dying_threshold))) * self.samples)
        return [self._layer_result(layer, needed, max_indices) for layer in range(len(self.neurons))]

    def dominant_regions(self, layer: int, neurons: Sequence[int]) -> list[tuple[int, float]]:
        """Per neuron of ``layer`` (flat indices): its dominant region (lowest on a tie) and the
        share of samples in it."""
        require(self.samples > 0, "health: expected at least one sample, got none")
        index = torch.as_tensor(list(neurons), dtype=torch.int64, device=self.device)
        counts = self._counts[layer][:, index].to(torch.int64)
        counts[0] = self.samples - counts[1:].sum(0)
        top = counts.max(0)
        return [
            (int(region), int(count) / self.samples)
            for region, count in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]

    def _layer_result(self, layer: int, needed: int, max_indices: int) -> LayerHealthStats:
        counts = self._counts[layer].to(torch.int64)
        counts[0] = self.samples - counts[1:].sum(0)
        dominant = counts.max(0).values
        dead = (dominant == self.samples).nonzero().flatten()
        dying = (dominant >= needed).nonzero().flatten()
        per_region = counts.sum(1).tolist()
        return LayerHealthStats(
            samples=self.samples,
            neurons=self.neurons[layer],
            dead_count=int(dead.numel()),
            dying_count=int(dying.numel()),
            dead_neurons=dead[:max_indices].tolist(),
            dying_neurons=dying[:max_indices].tolist(),
            region_occupancy=[c / (self.samples * self.neurons[layer]) for c in per_region],
            pre_activation_mean=self._pre[layer].mean(),
            pre_activation_var=self._pre[layer].var(),
            post_activation_mean=self._post[layer].mean(),
            post_activation_var=self._post[layer].var(),
        )


def _count_regions(counts: torch.Tensor, regions: torch.Tensor) -> None:
    """Add ``[b, M]`` region indices into ``[R, M]`` counts; row 0 is left to be derived."""
    n_regions, width = counts.shape
    if regions.device.type == "cpu" and n_regions <= _LOOP_REGIONS:
        # numpy's single-threaded reductions: torch's threaded ones contend with the runtime's
        # spinning threads (60 ms against 1 ms for a [16, 200704] ReLU6 layer of mobilenet_v2).
        array = regions.contiguous().numpy()
        target = counts.numpy()
        if n_regions == 2:
            target[1] += column_counts(array)
        else:
            for region in range(1, n_regions):
                target[region] += column_counts(array == region)
        return
    if n_regions == 2:
        counts[1] += regions.sum(0, dtype=torch.int32)
        return
    if n_regions <= _LOOP_REGIONS:
        for region in range(1, n_regions):
            counts[region] += (regions == region).sum(0, dtype=torch.int32)
        return
    flat = regions.to(torch.int64) * width + torch.arange(width, device=regions.device)
    flat = flat.flatten()
    counts.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))


class _Moments:
    """Streaming count, mean and sum of squared deviations in float64 (Chan et al.'s merge)."""

    def __init__(self, device: torch.device) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0
        #: ``(count, sum, sum of squares)`` of every batch merged, in order.
        self.pieces: list[tuple[int, float, float]] = []

    def add(self, values: torch.Tensor, widen: Callable[[np.ndarray], np.ndarray]) -> None:
        """Merge a batch of values (any shape): its float64 sum and sum of squares (a float32
        square is exact in float64), then Chan et al.'s merge. On the CPU ``widen`` turns the
        ``[n]`` values into float64 once (into a reused buffer) for both sums, each one numpy pass
        on one thread."""
        piece = values.numel()
        if not piece:
            return
        flat = values.detach().reshape(-1)
        if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
            widened = widen(flat.numpy())
            total_sum = float(widened.sum())
            total_squares = float(np.einsum("i,i->", widened, widened))
        else:
            exact = flat.to(torch.float64)
            total_sum, total_squares = float(exact.sum()), float(torch.dot(exact, exact))
        self.add_piece(piece, total_sum, total_squares)

    def add_piece(self, piece: int, total_sum: float, total_squares: float) -> None:
        """Merge ``piece`` values given by their float64 sum and sum of squares; kept in
        :attr:`pieces`, so another accumulator replaying them in the same order holds the same
        bits."""
        self.pieces.append((piece, total_sum, total_squares))
        piece_mean = total_sum / piece
        piece_m2 = max(total_squares - total_sum * piece_mean, 0.0)
        total = self.count + piece
        delta = piece_mean - self._mean
        self._mean += delta * (piece / total)
        self._m2 += piece_m2 + delta * delta * (self.count * piece / total)
        self.count = total

    def mean(self) -> float:
        return float(self._mean) if self.count else math.nan

    def var(self) -> float:
        return float(self._m2) / self.count if self.count else math.nan
