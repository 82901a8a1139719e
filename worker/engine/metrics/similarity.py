"""Pattern similarity (Definition 3): PS(x_i, x_j) is the share of neurons, over all analysed
layers, whose region is the same for both samples; PS_E (eq. 26) is its mean over a set of pairs
and PS_D(λ) = P(PS > λ) (eq. 27) its tail.

Everything is computed from exact integer counts of equal neurons. Every pair (:class:`AllPairs`)
goes through matrix products over row blocks of the N × N count matrix; listed pairs
(:class:`PairLists`) through gathered rows. Both reduce to :class:`CountHistogram`, from which the
mean, the standard deviation and PS_D follow exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from worker.engine.metrics._checks import describe, require
from worker.engine.metrics.pairs import AllPairs, PairLists, PairSets
from worker.engine.metrics.patterns import PatternStore

#: Integers below this are exact in float32, so a float32 sum of 0/1 products stays exact.
_FLOAT32_EXACT = 2**24
#: Working-set bytes for one chunk of neurons or pairs.
_CHUNK_BYTES = 64 * 2**20
#: Bytes of count matrices one row block may hold.
_BLOCK_BYTES = 256 * 2**20

Progress = Callable[[float], None]


class CountHistogram:
    """Exact histogram of equal-neuron counts ``c`` in ``[0, neurons]``, with PS = c / neurons.

    Example:
        >>> hist = CountHistogram(4)
        >>> hist.add(torch.tensor([4, 2, 3, 3]))
        >>> hist.pairs, hist.mean(), hist.ps_d([0.5, 0.75])
        (4, 0.75, [0.75, 0.25])
    """

    def __init__(self, neurons: int, device: torch.device | str | None = None) -> None:
        self.neurons = neurons
        self.bins = torch.zeros(neurons + 1, dtype=torch.int64, device=device)

    @property
    def pairs(self) -> int:
        return int(self.bins.sum())

    def add(self, counts: torch.Tensor) -> None:
        """Count every value of ``counts`` (any shape, integers in ``[0, neurons]``)."""
        if not counts.numel():
            return
        low, high = int(counts.min()), int(counts.max())
        require(
            low >= 0 and high <= self.neurons,
            f"counts: expected values in [0, {self.neurons}], got values in [{low}, {high}]",
        )
        self.bins += torch.bincount(counts.flatten().to(self.bins.device), minlength=self.neurons + 1)

    def merged(self, other: CountHistogram) -> CountHistogram:
        """A new histogram holding the counts of both."""
        both = CountHistogram(self.neurons, self.bins.device)
        both.bins = self.bins + other.bins.to(self.bins.device)
        return both

    def mean(self) -> float:
        """Mean PS; NaN without pairs."""
        bins = self.bins.cpu()
        pairs = int(bins.sum())
        if not pairs:
            return math.nan
        return int((bins * torch.arange(self.neurons + 1)).sum()) / (pairs * self.neurons)

    def std(self) -> float:
        """Population standard deviation of PS; NaN without pairs."""
        bins = self.bins.cpu().double()
        pairs = float(bins.sum())
        if not pairs:
            return math.nan
        deviation = torch.arange(self.neurons + 1, dtype=torch.float64) - self.mean() * self.neurons
        return math.sqrt(float((bins * deviation**2).sum()) / pairs) / self.neurons

    def ps_d(self, lambdas: Sequence[float]) -> list[float]:
        """P(PS > λ) for each λ, exactly: each λ is read as the decimal it prints as (0.3 is 3/10).
        NaN without pairs."""
        bins = self.bins.cpu()
        pairs = int(bins.sum())
        if not pairs:
            return [math.nan] * len(lambdas)
        at_least = [*bins.flip(0).cumsum(0).flip(0).tolist(), 0]
        return [at_least[_first_count_above(lam, self.neurons)] / pairs for lam in lambdas]


def _first_count_above(lam: float, neurons: int) -> int:
    """The least count ``c`` with ``c / neurons > lam``, clamped to ``[0, neurons + 1]``."""
    threshold = math.floor(Fraction(repr(float(lam))) * neurons) + 1
    return min(max(threshold, 0), neurons + 1)


@dataclass(frozen=True)
class KindSummary:
    """Pattern similarity over one kind of pairs. Undefined values (no pairs) are NaN.

    ``mean`` is PS_E (eq. 26), ``std`` the population standard deviation, ``ps_d[k]`` is
    PS_D(λ_k) (eq. 27); ``layer_mean`` / ``layer_std`` are the same for each layer alone.
    """

    pairs: int
    mean: float
    std: float
    ps_d: list[float]
    layer_mean: list[float]
    layer_std: list[float]

    @classmethod
    def from_histograms(
        cls, total: CountHistogram, layers: Sequence[CountHistogram], lambdas: Sequence[float]
    ) -> KindSummary:
        return cls(
            pairs=total.pairs,
            mean=total.mean(),
            std=total.std(),
            ps_d=total.ps_d(lambdas),
            layer_mean=[h.mean() for h in layers],
            layer_std=[h.std() for h in layers],
        )


@dataclass(frozen=True)
class SimilaritySummary:
    """Pattern similarity over random, same-label and different-label pairs."""

    selection: Literal["all", "sample", "explicit"]
    lambdas: list[float]
    random: KindSummary
    same_label: KindSummary
    different_label: KindSummary


def pattern_similarity(
    store: PatternStore,
    pairs: PairSets,
    lambdas: Sequence[float],
    *,
    device: torch.device | str | None = None,
    row_block: int | None = None,
    chunk_neurons: int | None = None,
    chunk_pairs: int | None = None,
    progress: Progress | None = None,
) -> SimilaritySummary:
    """PS_E, its spread and PS_D(λ) over the pairs of each kind, in total and per layer.

    Args:
        store: a complete :class:`PatternStore`.
        pairs: :class:`AllPairs` (matrix path, the N × N counts in row blocks of ``row_block``
            samples and neuron chunks of ``chunk_neurons``) or :class:`PairLists` (gather path,
            ``chunk_pairs`` pairs at a time). Chunk sizes never change the result.
        lambdas: the λ grid of PS_D.
        device: where the arithmetic runs; default the store's device.
        progress: called with the share of work done (0..1); it may raise to cancel.

    Example:
        >>> from worker.engine.metrics.pairs import select_pairs
        >>> store = PatternStore(3, neurons=[4], regions=[2])
        >>> store.append([torch.tensor([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.uint8)])
        >>> summary = pattern_similarity(store, select_pairs("all", 3, torch.tensor([0, 0, 1])), [0.5])
        >>> summary.random.pairs, summary.random.mean, summary.same_label.mean, summary.random.ps_d
        (3, 0.3333333333333333, 0.75, [0.3333333333333333])
    """
    require(store.complete, f"store: expected all {store.n_samples} samples, got {store.filled}")
    require(len(lambdas) > 0, "lambdas: expected at least one λ, got none")
    for name, value in (
        ("row_block", row_block),
        ("chunk_neurons", chunk_neurons),
        ("chunk_pairs", chunk_pairs),
    ):
        require(value is None or value > 0, f"{name}: expected None or > 0, got {value}")
    target = torch.device(device) if device is not None else store.device
    if isinstance(pairs, AllPairs):
        require(
            pairs.n_samples == store.n_samples,
            f"pairs: expected labels for {store.n_samples} samples, got {pairs.n_samples}",
        )
        return _all_pairs_summary(store, pairs.labels, lambdas, target, row_block, chunk_neurons, progress)
    return _listed_summary(store, pairs, lambdas, target, chunk_pairs, progress)


def pair_counts(
    store: PatternStore,
    pairs: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    chunk_pairs: int | None = None,
) -> torch.Tensor:
    """Equal-neuron counts of listed pairs, per layer.

    Args:
        pairs: ``[P, 2]`` int64 sample indices.
        device: where the arithmetic runs; default the store's device.
        chunk_pairs: pairs compared at a time; default fits a 64 MiB working set.

    Returns:
        ``[L, P]`` int64 on ``device``: entry ``[l, p]`` is the number of neurons of layer ``l``
        with equal regions for samples ``pairs[p, 0]`` and ``pairs[p, 1]``. PS is
        ``counts.sum(0) / store.total_neurons``.

    Example:
        >>> store = PatternStore(2, neurons=[3, 2], regions=[2, 3])
        >>> store.append([torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.uint8),
        ...               torch.tensor([[2, 0], [2, 1]], dtype=torch.uint8)])
        >>> pair_counts(store, torch.tensor([[0, 1], [1, 1]]))
        tensor([[2, 3],
                [1, 2]])
    """
    require(
        pairs.ndim == 2 and pairs.shape[1] == 2 and pairs.dtype == torch.int64,
        f"pairs: expected a [P, 2] int64 tensor, got {describe(pairs)}",
    )
    require(chunk_pairs is None or chunk_pairs > 0, f"chunk_pairs: expected None or > 0, got {chunk_pairs}")
    target = torch.device(device) if device is not None else store.device
    counts = torch.empty(store.num_layers, pairs.shape[0], dtype=torch.int64, device=target)
    for layer in range(store.num_layers):
        row_bytes = (store.neurons[layer] + 7) // 8 if store.is_packed(layer) else store.neurons[layer]
        step = chunk_pairs or max(1, _CHUNK_BYTES // (2 * row_bytes))
        for start in range(0, pairs.shape[0], step):
            chunk = pairs[start : start + step]
            counts[layer, start : start + chunk.shape[0]] = _listed_layer_counts(store, layer, chunk, target)
    return counts


def equal_count_matrix(
    store: PatternStore,
    layer: int | None = None,
    *,
    row_start: int = 0,
    row_stop: int | None = None,
    device: torch.device | str | None = None,
    chunk_neurons: int | None = None,
) -> torch.Tensor:
    """Rows ``row_start..row_stop-1`` of the N × N matrix of equal-neuron counts.

    Returns:
        ``[row_stop - row_start, N]`` int64 on ``device``: entry ``[a, j]`` is the number of
        neurons of ``layer`` (of every layer when ``None``) whose region is the same for samples
        ``row_start + a`` and ``j``. Holds ``8 (row_stop - row_start) N`` bytes: take row blocks for
        large N.

    Example:
        >>> store = PatternStore(2, neurons=[3], regions=[4])
        >>> store.append([torch.tensor([[3, 0, 1], [3, 2, 1]], dtype=torch.uint8)])
        >>> equal_count_matrix(store)
        tensor([[3, 2],
                [2, 3]])
    """
    require(store.complete, f"store: expected all {store.n_samples} samples, got {store.filled}")
    stop = store.n_samples if row_stop is None else row_stop
    require(
        0 <= row_start <= stop <= store.n_samples,
        f"rows: expected 0 <= row_start <= row_stop <= {store.n_samples}, got {row_start}..{stop}",
    )
    require(
        layer is None or 0 <= layer < store.num_layers,
        f"layer: expected None or an index in [0, {store.num_layers}), got {layer}",
    )
    target = torch.device(device) if device is not None else store.device
    layers = range(store.num_layers) if layer is None else [layer]
    total = torch.zeros(stop - row_start, store.n_samples, dtype=torch.int64, device=target)
    for index in layers:
        total += layer_block(store, index, (row_start, stop), 0, target, chunk_neurons)
    return total


def _listed_summary(
    store: PatternStore,
    pairs: PairLists,
    lambdas: Sequence[float],
    device: torch.device,
    chunk_pairs: int | None,
    progress: Progress | None,
) -> SimilaritySummary:
    kinds = (pairs.random, pairs.same_label, pairs.different_label)
    summaries = []
    for done, listed in enumerate(kinds, start=1):
        counts = pair_counts(store, listed, device=device, chunk_pairs=chunk_pairs)
        layers = [_histogram(row, width, device) for row, width in zip(counts, store.neurons, strict=True)]
        summaries.append(
            KindSummary.from_histograms(
                _histogram(counts.sum(0), store.total_neurons, device), layers, lambdas
            )
        )
        if progress is not None:
            progress(done / len(kinds))
    return SimilaritySummary(pairs.selection, list(lambdas), *summaries)


def _histogram(counts: torch.Tensor, neurons: int, device: torch.device) -> CountHistogram:
    hist = CountHistogram(neurons, device)
    hist.add(counts)
    return hist


def _all_pairs_summary(
    store: PatternStore,
    labels: torch.Tensor,
    lambdas: Sequence[float],
    device: torch.device,
    row_block: int | None,
    chunk_neurons: int | None,
    progress: Progress | None,
) -> SimilaritySummary:
    counts = all_pairs_histograms(
        store, labels, device=device, row_block=row_block, chunk_neurons=chunk_neurons, progress=progress
    )
    return counts.summary(lambdas)


@dataclass
class PairKindHistograms:
    """Equal-neuron count histograms of same-label (``[0]``) and different-label (``[1]``) pairs,
    over all layers (``totals``) and per layer (``per_layer[kind][layer]``). Histograms of
    disjoint sets of pairs add up exactly (:meth:`add`)."""

    totals: list[CountHistogram]
    per_layer: list[list[CountHistogram]]

    @classmethod
    def empty(cls, neurons: Sequence[int], device: torch.device | str | None = None) -> PairKindHistograms:
        return cls(
            [CountHistogram(sum(neurons), device) for _ in range(2)],
            [[CountHistogram(m, device) for m in neurons] for _ in range(2)],
        )

    def add(self, other: PairKindHistograms) -> None:
        for mine, theirs in zip(self.totals, other.totals, strict=True):
            mine.bins += theirs.bins.to(mine.bins.device)
        for mine_layers, their_layers in zip(self.per_layer, other.per_layer, strict=True):
            for mine, theirs in zip(mine_layers, their_layers, strict=True):
                mine.bins += theirs.bins.to(mine.bins.device)

    def summary(self, lambdas: Sequence[float]) -> SimilaritySummary:
        """PS over all pairs counted (random), the same-label and the different-label ones."""
        same, different = (
            KindSummary.from_histograms(total, layers, lambdas)
            for total, layers in zip(self.totals, self.per_layer, strict=True)
        )
        both = [a.merged(b) for a, b in zip(*self.per_layer, strict=True)]
        everything = KindSummary.from_histograms(self.totals[0].merged(self.totals[1]), both, lambdas)
        return SimilaritySummary("all", list(lambdas), everything, same, different)


def all_pairs_histograms(
    store: PatternStore,
    labels: torch.Tensor,
    *,
    rows: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    row_block: int | None = None,
    chunk_neurons: int | None = None,
    progress: Progress | None = None,
) -> PairKindHistograms:
    """Exact histograms of every pair ``i < j`` whose row ``i`` lies in ``rows`` (default: all
    ``N`` rows) of a complete store, with ``labels`` ``[N]``; row blocks of ``rows`` add up to the
    whole matrix's histograms.

    Example:
        >>> store = PatternStore(3, neurons=[4], regions=[2])
        >>> store.append([torch.tensor([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.uint8)])
        >>> labels = torch.tensor([0, 0, 1])
        >>> head = all_pairs_histograms(store, labels, rows=(0, 1))
        >>> head.add(all_pairs_histograms(store, labels, rows=(1, 3)))
        >>> head.summary([0.5]) == all_pairs_histograms(store, labels).summary([0.5])
        True
    """
    n = store.n_samples
    first, last = rows if rows is not None else (0, n)
    require(
        store.complete and 0 <= first <= last <= n and labels.shape == (n,),
        f"expected a complete store, rows within [0, {n}] and [{n}] labels, got {store.filled} samples "
        f"stored, rows {rows} and labels {describe(labels)}",
    )
    target = torch.device(device) if device is not None else store.device
    labels = labels.to(target)
    block_rows = row_block or default_row_block(n)
    counts = PairKindHistograms.empty(store.neurons, target)
    starts = range(first, last, block_rows)
    work = [(min(last, r0 + block_rows) - r0) * (n - r0) for r0 in starts]
    all_work = max(sum(work) * store.total_neurons, 1)
    done = 0
    for r0, block_work in zip(starts, work, strict=True):
        block_range = (r0, min(last, r0 + block_rows))
        kinds = pair_kinds(labels, block_range)
        total = torch.zeros(block_range[1] - r0, n - r0, dtype=torch.int64, device=target)
        for layer in range(store.num_layers):
            block = layer_block(store, layer, block_range, r0, target, chunk_neurons)
            add_by_kind(block, kinds, [hists[layer] for hists in counts.per_layer])
            total += block
            done += block_work * store.neurons[layer]
            if progress is not None:
                progress(done / all_work)
        add_by_kind(total, kinds, counts.totals)
    return counts


def default_row_block(n: int) -> int:
    """A quarter of the rows (blocks below the first skip the lower triangle), at least 256, and
    no more than the block budget allows."""
    budget_rows = max(1, _BLOCK_BYTES // (32 * max(n, 1)))
    return min(budget_rows, max(256, -(-n // 4)))


def pair_kinds(labels: torch.Tensor, rows: tuple[int, int]) -> torch.Tensor:
    """Kind of each entry of a row block whose columns start at its first row: 0 for ``j <= i``
    (not a pair), 1 for a same-label pair, 2 for a different-label pair; int64."""
    start, stop = rows
    row_ids = torch.arange(start, stop, device=labels.device)
    col_ids = torch.arange(start, labels.numel(), device=labels.device)
    upper = col_ids[None, :] > row_ids[:, None]
    different = labels[start:stop, None] != labels[None, start:]
    return upper.to(torch.int64) * (1 + different.to(torch.int64))


def add_by_kind(counts: torch.Tensor, kinds: torch.Tensor, hists: Sequence[CountHistogram]) -> None:
    """Add the same-label and the different-label entries of ``counts`` to ``hists[0]`` and
    ``hists[1]``, in one pass."""
    width = hists[0].neurons + 1
    binned = torch.bincount((counts * 3 + kinds).flatten(), minlength=3 * width).view(width, 3)
    for kind, hist in enumerate(hists, start=1):
        hist.bins += binned[:, kind]


def layer_block(
    store: PatternStore,
    layer: int,
    rows: tuple[int, int],
    first_col: int,
    device: torch.device,
    chunk_neurons: int | None,
) -> torch.Tensor:
    """``[rows, N - first_col]`` int64 equal-neuron counts of one layer, ``first_col <= rows[0]``."""
    width = store.neurons[layer]
    n_cols = store.n_samples - first_col
    own = slice(rows[0] - first_col, rows[1] - first_col)
    step = _neuron_step(chunk_neurons, n_cols)
    products = _ExactSum((rows[1] - rows[0], n_cols), device)
    ones_per_sample = torch.zeros(n_cols, dtype=torch.int64, device=device)
    two_regions = store.regions[layer] == 2
    for start in range(0, width, step):
        stop = min(width, start + step)
        block = store.columns(layer, start, stop, first_sample=first_col).to(device)
        products.reserve(stop - start)
        if two_regions:
            ones = block.to(torch.float32)
            products.add_product(ones[own], ones)
            ones_per_sample += block.sum(1, dtype=torch.int64)
            continue
        for region in range(int(block.min()), int(block.max()) + 1):
            indicator = (block == region).to(torch.float32)
            products.add_product(indicator[own], indicator)
    counts = products.result()
    if two_regions:
        counts = 2 * counts + width - ones_per_sample[own, None] - ones_per_sample[None, :]
    return counts


def _neuron_step(chunk_neurons: int | None, n_cols: int) -> int:
    if chunk_neurons is not None:
        require(chunk_neurons > 0, f"chunk_neurons: expected > 0, got {chunk_neurons}")
        step = chunk_neurons
    else:
        step = _CHUNK_BYTES // (4 * max(n_cols, 1))
    step = min(step, _FLOAT32_EXACT)
    return max(8, step - step % 8)


class _ExactSum:
    """A sum of float32 products of 0/1 matrices, kept exact: each product entry counts at most the
    chunk's neurons, and the float32 buffer goes into int64 before its entries could reach 2^24."""

    def __init__(self, shape: tuple[int, int], device: torch.device) -> None:
        self._buffer = torch.zeros(shape, dtype=torch.float32, device=device)
        self._total = torch.zeros(shape, dtype=torch.int64, device=device)
        self._bound = 0

    def reserve(self, neurons: int) -> None:
        """Announce products over ``neurons`` more neurons (all regions of one chunk together)."""
        if self._bound + neurons > _FLOAT32_EXACT:
            self._flush()
        self._bound += neurons

    def add_product(self, rows: torch.Tensor, columns: torch.Tensor) -> None:
        self._buffer.addmm_(rows, columns.T)

    def result(self) -> torch.Tensor:
        self._flush()
        return self._total

    def _flush(self) -> None:
        self._total += self._buffer.to(torch.int64)
        self._buffer.zero_()
        self._bound = 0


def _listed_layer_counts(
    store: PatternStore, layer: int, pairs: torch.Tensor, device: torch.device
) -> torch.Tensor:
    first, second = pairs[:, 0], pairs[:, 1]
    if store.is_packed(layer):
        differ = store.packed_rows(layer, first).to(device) ^ store.packed_rows(layer, second).to(device)
        return store.neurons[layer] - _popcount_words(differ.view(torch.int64))
    same = store.rows(layer, first).to(device) == store.rows(layer, second).to(device)
    return same.sum(1, dtype=torch.int64)


def _popcount_words(words: torch.Tensor) -> torch.Tensor:
    """``[P]`` int64 set bits per row of ``[P, K]`` int64 words (SWAR: bit counts per byte, then
    bytes folded together). Arithmetic shifts of negative words only touch bits the masks drop;
    once bytes hold counts the words are non-negative, and nothing overflows."""
    shifted = (words >> 1).bitwise_and_(0x5555555555555555)
    x = words - shifted
    torch.bitwise_right_shift(x, 2, out=shifted).bitwise_and_(0x3333333333333333)
    x.bitwise_and_(0x3333333333333333).add_(shifted)
    x.add_(torch.bitwise_right_shift(x, 4, out=shifted)).bitwise_and_(0x0F0F0F0F0F0F0F0F)
    for bits in (8, 16, 32):
        x.add_(torch.bitwise_right_shift(x, bits, out=shifted))
    return x.bitwise_and_(0x7F).sum(1)
