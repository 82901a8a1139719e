"""Generalized activation patterns (Definition 1): the region index of every neuron, and a compact
store that holds the pattern of every sample.

With breakpoints Γ = [γ1 < … < γn], region ``r`` is the interval (γ_r, γ_{r+1}] with γ_0 = −∞ and
γ_{n+1} = +∞ (eq. 12): a value's region is the number of breakpoints strictly below it, so a value
equal to a breakpoint belongs to the lower region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from worker.engine.metrics._checks import check_patterns, describe, require
from worker.engine.metrics._cpu import max_index, zeros

MAX_BREAKPOINTS = 255
_COMPARE_LIMIT = 16
_SHIFTS = tuple(range(8))


def region_indices(values: torch.Tensor, breakpoints: torch.Tensor) -> torch.Tensor:
    """Region index of every value: the number of breakpoints strictly below it.

    Args:
        values: ``[B, M]`` floating values (pre- or post-activation), any device.
        breakpoints: ``[n]`` strictly increasing finite breakpoints, ``1 <= n <= 255``, any float
            dtype and device. A breakpoint is compared at its own precision: a float64 Γ is rounded
            down to ``values``' dtype, which decides ``v <= γ`` exactly for every value.

    Returns:
        ``[B, M]`` uint8 region indices in ``0..n`` on ``values``' device. NaN has no breakpoint
        strictly below it and goes to region 0.

    Example:
        >>> region_indices(torch.tensor([[-1.0, 0.0, 0.5, 1.0, 2.0]]), torch.tensor([0.0, 1.0]))
        tensor([[0, 0, 1, 1, 2]], dtype=torch.uint8)
    """
    require(
        values.ndim == 2 and values.is_floating_point(),
        f"values: expected a [B, M] floating tensor, got {describe(values)}",
    )
    bounds = _bounds_for(values, breakpoints)
    work = values if values.dtype in (torch.float32, torch.float64) else values.float()
    return _encode(work, bounds, bounds.tolist())


class RegionCoder:
    """:func:`region_indices` under one fixed Γ: the breakpoints are checked and rounded once, for
    values of ``dtype`` on ``device`` (other values take the general path).

    Example:
        >>> coder = RegionCoder(torch.tensor([0.0, 1.0], dtype=torch.float64))
        >>> coder(torch.tensor([[-1.0, 0.0, 0.5, 1.0, 2.0]])), coder.regions
        (tensor([[0, 0, 1, 1, 2]], dtype=torch.uint8), 3)
    """

    def __init__(
        self,
        breakpoints: torch.Tensor,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.bounds = _bounds_for(torch.empty(0, dtype=dtype, device=device), breakpoints)
        self._listed = self.bounds.tolist()
        self.regions = len(self._listed) + 1

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` values to ``[B, M]`` uint8 region indices."""
        if values.ndim != 2 or values.dtype != self.bounds.dtype or values.device != self.bounds.device:
            return region_indices(values, self.bounds)
        return _encode(values, self.bounds, self._listed)


def _encode(values: torch.Tensor, bounds: torch.Tensor, listed: list[float]) -> torch.Tensor:
    if len(listed) <= _COMPARE_LIMIT:
        return _count_below(values, listed)
    regions = torch.bucketize(values, bounds, right=False, out_int32=True).to(torch.uint8)
    return regions.masked_fill_(torch.isnan(values), 0)


def _bounds_for(values: torch.Tensor, breakpoints: torch.Tensor) -> torch.Tensor:
    require(
        breakpoints.ndim == 1
        and 1 <= breakpoints.numel() <= MAX_BREAKPOINTS
        and breakpoints.is_floating_point(),
        f"breakpoints: expected a [n] float tensor, 1 <= n <= {MAX_BREAKPOINTS}, got {describe(breakpoints)}",
    )
    exact = breakpoints.detach().to(device="cpu", dtype=torch.float64)
    require(
        bool(torch.isfinite(exact).all()) and bool((exact[1:] > exact[:-1]).all()),
        f"breakpoints: expected strictly increasing finite values, got {exact.tolist()}",
    )
    target = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
    rounded = exact.to(target)
    too_high = rounded.to(torch.float64) > exact
    rounded = torch.where(too_high, torch.nextafter(rounded, torch.full_like(rounded, -torch.inf)), rounded)
    return rounded.to(values.device)


def _count_below(values: torch.Tensor, bounds: list[float]) -> torch.Tensor:
    if values.device.type == "cpu":
        array = values.detach().contiguous().numpy()
        counted = np.greater(array, bounds[0]).view(np.uint8)
        for bound in bounds[1:]:
            counted = counted + np.greater(array, bound).view(np.uint8)
        return torch.from_numpy(counted)
    regions = torch.gt(values, bounds[0]).view(torch.uint8)
    if len(bounds) > 1:
        regions = regions.clone()
        for bound in bounds[1:]:
            regions.add_(torch.gt(values, bound).view(torch.uint8))
    return regions


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack ``[B, M]`` uint8 zeros and ones into ``[B, ceil(M / 8)]`` bytes; neuron ``m`` is bit
    ``m % 8`` of byte ``m // 8``, and the padding bits are zero.

    Example:
        >>> pack_bits(torch.tensor([[1, 0, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.uint8))
        tensor([[13,  1]], dtype=torch.uint8)
    """
    rows, width = bits.shape
    if bits.device.type == "cpu":
        packed = np.packbits(bits.contiguous().numpy(), axis=1, bitorder="little")
        return torch.from_numpy(packed)
    padded = torch.nn.functional.pad(bits, (0, -width % 8)) if width % 8 else bits
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (padded.reshape(rows, (width + 7) // 8, 8) << shifts).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``[B, K]`` bytes to ``[B, width]`` uint8 zeros and ones.

    Example:
        >>> unpack_bits(torch.tensor([[13, 1]], dtype=torch.uint8), 9)
        tensor([[1, 0, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.uint8)
    """
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts).bitwise_and_(1)
    return bits.reshape(packed.shape[0], 8 * packed.shape[1])[:, :width]


class PatternStore:
    """The activation pattern of every sample, layer by layer, in at most one byte per neuron-sample.

    Each layer ``l`` has its own ``neurons[l]`` neurons and ``regions[l] = len(Γ_l) + 1`` regions
    (2..256). Two-region layers are bit-packed (8 neurons per byte, see :func:`pack_bits`, rows
    padded with zero bytes to a multiple of 8 bytes) unless ``pack_bits=False``; the others take
    one byte per neuron. Fill with :meth:`append` batch by
    batch in sample order; read with :meth:`rows`, :meth:`packed_rows` and :meth:`columns`, which
    return tensors on the store's ``device``.

    Example:
        >>> store = PatternStore(3, neurons=[4, 2], regions=[2, 3])
        >>> store.append([torch.tensor([[1, 0, 0, 1]], dtype=torch.uint8),
        ...               torch.tensor([[2, 0]], dtype=torch.uint8)])
        >>> store.append([torch.zeros(2, 4, dtype=torch.uint8), torch.ones(2, 2, dtype=torch.uint8)])
        >>> store.complete, store.nbytes
        (True, 30)
        >>> store.rows(0, torch.tensor([0, 2]))
        tensor([[1, 0, 0, 1],
                [0, 0, 0, 0]], dtype=torch.uint8)
        >>> store.columns(1, 0, 1)
        tensor([[2],
                [1],
                [1]], dtype=torch.uint8)
    """

    def __init__(
        self,
        n_samples: int,
        neurons: Sequence[int],
        regions: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        pack_bits: bool = True,
    ) -> None:
        require(n_samples >= 0, f"n_samples: expected >= 0, got {n_samples}")
        require(
            len(neurons) == len(regions) and len(neurons) > 0,
            f"expected one region count per layer and at least one layer, got {len(neurons)} layers "
            f"and {len(regions)} region counts",
        )
        for layer, (width, count) in enumerate(zip(neurons, regions, strict=True)):
            require(width > 0, f"neurons[{layer}]: expected > 0, got {width}")
            require(2 <= count <= MAX_BREAKPOINTS + 1, f"regions[{layer}]: expected 2..256, got {count}")
        self.n_samples = n_samples
        self.neurons = tuple(int(m) for m in neurons)
        self.regions = tuple(int(r) for r in regions)
        self.device = torch.device(device)
        self._packed = tuple(pack_bits and r == 2 for r in self.regions)
        self._data = [
            zeros((n_samples, 8 * -(-m // 64) if packed else m), torch.uint8, self.device)
            for m, packed in zip(self.neurons, self._packed, strict=True)
        ]
        self.filled = 0

    @property
    def num_layers(self) -> int:
        return len(self.neurons)

    @property
    def total_neurons(self) -> int:
        return sum(self.neurons)

    @property
    def complete(self) -> bool:
        return self.filled == self.n_samples

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored patterns."""
        return sum(t.numel() for t in self._data)

    def is_packed(self, layer: int) -> bool:
        return self._packed[self._layer(layer)]

    def append(self, patterns: Sequence[torch.Tensor]) -> None:
        """Store the next ``b`` samples: per layer ``[b, neurons[l]]`` uint8 region indices."""
        batch = check_patterns(patterns, self.neurons)
        require(
            self.filled + batch <= self.n_samples,
            f"append: expected at most {self.n_samples - self.filled} more samples, got {batch}",
        )
        stop = self.filled + batch
        for layer, tensor in enumerate(patterns):
            top = max_index(tensor) if batch else 0
            require(
                top < self.regions[layer],
                f"patterns[{layer}]: expected region indices below {self.regions[layer]}, got {top}",
            )
            values = tensor.to(self.device)
            target = self._data[layer]
            if self._packed[layer]:
                target, values = target[:, : -(-values.shape[1] // 8)], pack_bits(values)
            if self.device.type == "cpu":
                target.numpy()[self.filled : stop] = values.numpy()
            else:
                target[self.filled : stop] = values
        self.filled = stop

    def append_stored(self, stored: Sequence[torch.Tensor]) -> None:
        """Store the next ``b`` samples given as this store keeps them: per layer
        :meth:`packed_rows` of a bit-packed layer, region indices of the others (no unpacking and
        packing again when stores are joined or read back). Checked like :meth:`append`: region
        indices below ``regions[l]``, a packed row's padding bits zero."""
        require(
            len(stored) == self.num_layers and len({int(s.shape[0]) for s in stored}) == 1,
            f"append_stored: expected {self.num_layers} layers of one batch size, got shapes "
            f"{[list(s.shape) for s in stored]}",
        )
        batch = int(stored[0].shape[0])
        require(
            self.filled + batch <= self.n_samples,
            f"append_stored: expected at most {self.n_samples - self.filled} more samples, got {batch}",
        )
        stop = self.filled + batch
        for layer, rows in enumerate(stored):
            width = self._data[layer].shape[1]
            require(
                rows.dtype == torch.uint8 and rows.ndim == 2 and rows.shape[1] == width,
                f"stored[{layer}]: expected [{batch}, {width}] uint8, got {describe(rows)}",
            )
            if batch:
                self._check_stored(layer, rows)
            self._data[layer][self.filled : stop] = rows.to(self.device)
        self.filled = stop

    def _check_stored(self, layer: int, rows: torch.Tensor) -> None:
        if not self._packed[layer]:
            top = max_index(rows)
            require(
                top < self.regions[layer],
                f"stored[{layer}]: expected region indices below {self.regions[layer]}, got {top}",
            )
            return
        width, used = self.neurons[layer], -(-self.neurons[layer] // 8)
        padding = rows[:, used:]
        last = rows[:, used - 1] >> (width - 8 * (used - 1)) if width % 8 else None
        require(
            (padding.numel() == 0 or max_index(padding) == 0) and (last is None or max_index(last) == 0),
            f"stored[{layer}]: expected zero padding bits beyond neuron {width - 1} of packed rows",
        )

    def rows(self, layer: int, index: torch.Tensor) -> torch.Tensor:
        """``[P, neurons[layer]]`` uint8 region indices of the samples in ``index`` (``[P]`` int64)."""
        data = self._data[self._layer(layer)].index_select(0, self._rows_index(index))
        return unpack_bits(data, self.neurons[layer]) if self._packed[layer] else data

    def stored_rows(self, layer: int, index: torch.Tensor) -> torch.Tensor:
        """The samples ``index`` of ``layer`` as this store keeps them (:meth:`append_stored`)."""
        return self._data[self._layer(layer)].index_select(0, self._rows_index(index))

    def packed_rows(self, layer: int, index: torch.Tensor) -> torch.Tensor:
        """``[P, 8 * ceil(neurons[layer] / 64)]`` packed bits (:func:`pack_bits`, then zero bytes up
        to whole 8-byte words) of a bit-packed layer's samples ``index``."""
        require(self.is_packed(layer), f"packed_rows: expected a bit-packed layer, layer {layer} is not")
        return self._data[layer].index_select(0, self._rows_index(index))

    def columns(self, layer: int, start: int, stop: int, *, first_sample: int = 0) -> torch.Tensor:
        """``[filled - first_sample, stop - start]`` uint8 region indices of neurons ``start..stop-1``.

        For a bit-packed layer, ``start`` a multiple of 8 avoids unpacking a partial byte.
        """
        width = self.neurons[self._layer(layer)]
        require(
            0 <= start < stop <= width and 0 <= first_sample <= self.filled,
            f"columns: expected 0 <= start < stop <= {width} and 0 <= first_sample <= {self.filled}, "
            f"got start={start}, stop={stop}, first_sample={first_sample}",
        )
        data = self._data[layer][first_sample : self.filled]
        if not self._packed[layer]:
            return data[:, start:stop]
        byte_start = start // 8
        bits = unpack_bits(data[:, byte_start : (stop + 7) // 8], width - 8 * byte_start)
        return bits[:, start - 8 * byte_start : stop - 8 * byte_start]

    def _layer(self, layer: int) -> int:
        require(
            0 <= layer < self.num_layers, f"layer: expected an index in [0, {self.num_layers}), got {layer}"
        )
        return layer

    def _rows_index(self, index: torch.Tensor) -> torch.Tensor:
        require(
            index.ndim == 1 and index.dtype == torch.int64,
            f"index: expected a [P] int64 tensor, got {describe(index)}",
        )
        if index.numel():
            low, high = int(index.min()), int(index.max())
            require(
                low >= 0 and high < self.filled,
                f"index: expected sample indices in [0, {self.filled}), got values in [{low}, {high}]",
            )
        return index.to(self.device)
