"""Chance-corrected pattern similarity: how much more alike same-label inputs are than the region
occupancy of each neuron alone would make them.

Raw PS depends on Γ: with values about N(0, 1), four regions give PS ≈ 0.27 and two regions
PS ≈ 0.50 whatever the training. The chance level removes that scale. For neuron ``n`` with
``c[n, r]`` of the N samples in region ``r`` (``c[n, k, r]`` of them with label ``k``), over all
``P = N(N-1)/2`` distinct pairs:

- random agreement ``a_n = Σ_r C(c[n, r], 2) / P``: the share of pairs whose values share the
  neuron's region. It is also the expected agreement of same-label (or different-label) pairs when
  patterns are independent of labels (labels permuted at random, class sizes kept), so it is the
  *chance* level;
- same-label agreement ``s_n = Σ_k Σ_r C(c[n, k, r], 2) / P_same`` with
  ``P_same = Σ_k C(N_k, 2)``, and different-label agreement
  ``d_n = (a_n · P - s_n · P_same) / (P - P_same)``: the paper's *dying* neuron keeps values of
  differently labelled inputs in one region (``d_n`` near 1).

For a set of neurons (a layer or the network) the chance PS, same- and different-label PS are the
means of ``a_n``, ``s_n`` and ``d_n`` (over all pairs these equal the PS_E of random, same- and
different-label pairs exactly), and the lift of a pair kind is Cohen's-kappa-like
``(PS_kind - chance) / (1 - chance)``: 0 when labels tell nothing about patterns, 1 when every
same-label pair agrees everywhere. ``separation = lift_same - lift_different``.

Everything comes from integer counts, so an accumulator fed block by block and merged
(:meth:`LabelRegionCounts.merge`) gives exactly what one pass over all samples gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.metrics._checks import check_patterns, describe, require
from worker.engine.metrics._cpu import column_counts, max_index, zeros

#: Samples per one-hot product in :meth:`LabelRegionCounts.update` (float32 sums of 0/1 values are
#: exact up to 2^24; this also bounds the float copy of a batch's patterns).
_MATMUL_ROWS = 4096


@dataclass(frozen=True)
class ChanceStats:
    """Chance-corrected PS of one set of neurons over all distinct pairs; ``None`` where undefined
    (no pairs of a kind). With chance = 1 (every neuron dead) the lifts are 0: nothing separates."""

    neurons: int
    chance: float | None
    same_label: float | None
    different_label: float | None
    lift_same: float | None
    lift_different: float | None
    separation: float | None


@dataclass(frozen=True)
class NeuronAgreement:
    """Per-neuron label-conditional agreement of one layer (all ``[M]`` float64)."""

    random: torch.Tensor
    same_label: torch.Tensor
    different_label: torch.Tensor


@dataclass(frozen=True)
class LayerLabelStats:
    """One layer's chance-corrected PS and the summary of its per-neuron agreements."""

    chance: ChanceStats
    #: Mean over neurons of the different-label agreement ``d_n``.
    different_label_agreement_mean: float | None
    #: Neurons whose different-label agreement is at least ``dying_threshold``: they keep inputs
    #: of different labels in one region (the paper's dying neuron).
    label_dying_count: int
    #: Mean per-neuron lift ``(s_n - a_n) / (1 - a_n)`` over neurons that are not dead.
    neuron_lift_mean: float | None


@dataclass(frozen=True)
class ChanceSummary:
    """Chance-corrected PS of the network and of each layer, over ``samples`` samples."""

    samples: int
    classes: int
    pairs: int
    same_label_pairs: int
    network: ChanceStats
    layers: list[LayerLabelStats]


class LabelRegionCounts:
    """Per layer ``[K, R_l, M_l]`` int64 counts of samples by label, region and neuron.

    Labels are any int64 values; the ``K`` rows follow :attr:`labels` (sorted). Holds
    ``8 · K · R_l · M_l`` bytes per layer on ``device``. Feed with :meth:`update` batch by batch
    in any order, combine with :meth:`merge`.

    Example:
        >>> counts = LabelRegionCounts(neurons=[2], regions=[2])
        >>> counts.update([torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.uint8)],
        ...               torch.tensor([0, 0, 1]))
        >>> summary = counts.result(dying_threshold=0.9)
        >>> summary.network.chance, summary.network.same_label, summary.network.different_label
        (0.3333333333333333, 0.5, 0.25)
    """

    def __init__(
        self, neurons: Sequence[int], regions: Sequence[int], *, device: torch.device | str = "cpu"
    ) -> None:
        require(
            len(neurons) == len(regions) and len(neurons) > 0,
            f"expected one region count per layer and at least one layer, got {len(neurons)} layers "
            f"and {len(regions)} region counts",
        )
        require(
            all(m > 0 for m in neurons) and all(r >= 2 for r in regions),
            f"expected neurons > 0 and regions >= 2 per layer, got {list(neurons)} and {list(regions)}",
        )
        self.neurons = tuple(int(m) for m in neurons)
        self.regions = tuple(int(r) for r in regions)
        self.device = torch.device(device)
        self.labels: list[int] = []
        self.samples = 0
        self._counts = [
            torch.zeros(0, r, m, dtype=torch.int64, device=self.device)
            for m, r in zip(self.neurons, self.regions, strict=True)
        ]

    def update(self, patterns: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        """Add one batch: per layer ``[b, M_l]`` uint8 region indices and ``[b]`` integer labels."""
        batch = check_patterns(patterns, self.neurons)
        require(
            labels.shape == (batch,) and not labels.is_floating_point() and labels.dtype != torch.bool,
            f"labels: expected a [{batch}] integer tensor, got {describe(labels)}",
        )
        for layer, regions in enumerate(patterns):
            high = max_index(regions) if regions.numel() else 0
            require(
                high < self.regions[layer],
                f"patterns[{layer}]: expected region indices < {self.regions[layer]}, got {high}",
            )
        self._add_labels(sorted(set(labels.tolist())))
        rows = torch.searchsorted(
            torch.tensor(self.labels, dtype=torch.int64, device=self.device),
            labels.to(self.device, torch.int64),
        )
        if self.device.type == "cpu":
            order = torch.argsort(rows, stable=True).numpy()
            present, starts = np.unique(rows.numpy()[order], return_index=True)
            for layer, regions in enumerate(patterns):
                ordered = regions.cpu().numpy()[order]
                _add_sorted_counts(self._counts[layer].numpy(), present, starts, ordered)
        else:
            for start in range(0, batch, _MATMUL_ROWS):
                stop = min(start + _MATMUL_ROWS, batch)
                one_hot = torch.nn.functional.one_hot(rows[start:stop], len(self.labels)).T.float()
                sizes = one_hot.sum(1).round().to(torch.int64)
                for layer, regions in enumerate(patterns):
                    _add_counts(self._counts[layer], one_hot, sizes, regions[start:stop].to(self.device))
        self.samples += batch

    def state(self) -> dict[str, np.ndarray]:
        """Everything accumulated, as arrays: ``labels`` ``[K]``, ``samples``, and per layer
        ``counts{l}`` ``[K, R_l, M_l]``; :meth:`from_state` rebuilds the accumulator."""
        arrays = {
            "labels": np.asarray(self.labels, dtype=np.int64),
            "samples": np.asarray(self.samples, dtype=np.int64),
        }
        arrays.update({f"counts{layer}": c.cpu().numpy() for layer, c in enumerate(self._counts)})
        return arrays

    @classmethod
    def from_state(
        cls,
        neurons: Sequence[int],
        regions: Sequence[int],
        state: Mapping[str, np.ndarray],
        *,
        device: torch.device | str = "cpu",
    ) -> LabelRegionCounts:
        """The accumulator :meth:`state` described (checked against the layers' shapes)."""
        counts = cls(neurons, regions, device=device)
        labels = [int(k) for k in np.asarray(state["labels"]).reshape(-1)]
        require(
            labels == sorted(set(labels)),
            f"state: expected sorted distinct labels, got {labels[:10]}",
        )
        for layer, (m, r) in enumerate(zip(counts.neurons, counts.regions, strict=True)):
            found = np.asarray(state[f"counts{layer}"])
            require(
                found.shape == (len(labels), r, m) and found.dtype == np.int64,
                f"state: expected counts{layer} int64 [{len(labels)}, {r}, {m}], got {found.dtype} "
                f"{list(found.shape)}",
            )
            counts._counts[layer] = torch.from_numpy(found.copy()).to(counts.device)
        counts.labels = labels
        counts.samples = int(state["samples"])
        return counts

    def merge(self, other: LabelRegionCounts) -> None:
        """Add another accumulator's counts (same layers and regions) into this one."""
        require(
            other.neurons == self.neurons and other.regions == self.regions,
            f"merge: expected counts of layers with neurons {self.neurons} and regions {self.regions}, "
            f"got neurons {other.neurons} and regions {other.regions}",
        )
        self._add_labels(other.labels)
        rows = torch.tensor([self.labels.index(label) for label in other.labels], dtype=torch.int64)
        for layer, counts in enumerate(other._counts):
            self._counts[layer].index_add_(0, rows.to(self.device), counts.to(self.device))
        self.samples += other.samples

    def class_sizes(self) -> torch.Tensor:
        """``[K]`` int64 samples per label (in :attr:`labels` order)."""
        return self._counts[0][:, :, 0].sum(1).cpu()

    def layer_counts(self, layer: int) -> torch.Tensor:
        """``[K, R_l, M_l]`` int64 counts of layer ``layer``."""
        return self._counts[layer]

    def neuron_agreement(self, layer: int) -> NeuronAgreement:
        """Per-neuron random, same- and different-label agreement of ``layer`` (NaN when a pair kind
        has no pairs)."""
        pairs, same_pairs = self._pair_totals()
        counts = self._counts[layer].double()
        agree_all = _pairs_of(counts.sum(0)).sum(0)
        agree_same = _pairs_of(counts).sum((0, 1))
        different_pairs = pairs - same_pairs
        return NeuronAgreement(
            random=(agree_all / pairs if pairs else agree_all * math.nan).cpu(),
            same_label=(agree_same / same_pairs if same_pairs else agree_same * math.nan).cpu(),
            different_label=(
                (agree_all - agree_same) / different_pairs if different_pairs else agree_all * math.nan
            ).cpu(),
        )

    def result(self, dying_threshold: float) -> ChanceSummary:
        """Chance-corrected PS of the network and each layer; a layer's ``label_dying_count``
        counts neurons with different-label agreement ``>= dying_threshold``."""
        require(self.samples >= 2, f"chance-corrected PS: expected at least 2 samples, got {self.samples}")
        require(
            0.0 < dying_threshold <= 1.0,
            f"dying_threshold: expected a value in (0, 1], got {dying_threshold}",
        )
        pairs, same_pairs = self._pair_totals()
        agreements = [self.neuron_agreement(layer) for layer in range(len(self.neurons))]
        layers = []
        for agreement in agreements:
            different = agreement.different_label
            lifts = _lift(agreement.same_label, agreement.random)
            living = lifts[~lifts.isnan()]
            layers.append(
                LayerLabelStats(
                    chance=_chance_stats(agreement),
                    different_label_agreement_mean=_finite(different.mean()),
                    label_dying_count=int((different >= dying_threshold).sum()),
                    neuron_lift_mean=_finite(living.mean()) if living.numel() else None,
                )
            )
        network = _chance_stats(
            NeuronAgreement(
                random=torch.cat([a.random for a in agreements]),
                same_label=torch.cat([a.same_label for a in agreements]),
                different_label=torch.cat([a.different_label for a in agreements]),
            )
        )
        return ChanceSummary(
            samples=self.samples,
            classes=len(self.labels),
            pairs=pairs,
            same_label_pairs=same_pairs,
            network=network,
            layers=layers,
        )

    def _pair_totals(self) -> tuple[int, int]:
        sizes = self.class_sizes().tolist()
        return self.samples * (self.samples - 1) // 2, sum(n * (n - 1) // 2 for n in sizes)

    def _add_labels(self, labels: Sequence[int]) -> None:
        new = sorted(set(labels) - set(self.labels))
        if not new:
            return
        merged = sorted(self.labels + new)
        rows = torch.tensor([merged.index(label) for label in self.labels], dtype=torch.int64)
        for layer, counts in enumerate(self._counts):
            grown = zeros((len(merged), *counts.shape[1:]), torch.int64, self.device)
            grown[rows.to(self.device)] = counts
            self._counts[layer] = grown
        self.labels = merged


def _add_sorted_counts(
    counts: np.ndarray, present: np.ndarray, starts: np.ndarray, regions: np.ndarray
) -> None:
    """Add ``[b, M]`` region indices, rows grouped by label, into ``[K, R, M]`` int64 counts:
    label row ``present[i]``'s samples are rows ``starts[i]`` up to the next start (numpy's
    single-threaded segment sums; the CPU path)."""
    stops = [*starts[1:].tolist(), regions.shape[0]]
    last = counts.shape[1] - 1
    for label, start, stop in zip(present.tolist(), starts.tolist(), stops, strict=True):
        block = regions[start:stop]
        # Region 0 by difference: every index is below the region count (checked by the caller).
        if last == 1:
            found = column_counts(block)
            counts[label, 1] += found
        else:
            found = np.zeros(block.shape[1], dtype=np.int64)
            for region in range(1, last + 1):
                here = column_counts(block == region)
                counts[label, region] += here
                found += here
        counts[label, 0] += (stop - start) - found


def _add_counts(
    counts: torch.Tensor, one_hot: torch.Tensor, sizes: torch.Tensor, regions: torch.Tensor
) -> None:
    """Add ``[b, M]`` region indices into ``[K, R, M]`` counts, given the samples' ``[K, b]``
    float32 one-hot labels and ``[K]`` samples per label: one ``[K, b] @ [b, M]`` product per
    region but the last (exact: sums of 0/1 below 2^24), the last region by difference (the
    accelerator path)."""
    n_regions = counts.shape[1]
    seen = torch.zeros(counts.shape[0], counts.shape[2], dtype=torch.int64, device=counts.device)
    for region in range(n_regions - 1):
        found = (one_hot @ (regions == region).float()).round().to(torch.int64)
        counts[:, region] += found
        seen += found
    counts[:, n_regions - 1] += sizes.unsqueeze(1) - seen


def _pairs_of(counts: torch.Tensor) -> torch.Tensor:
    """``C(c, 2)`` elementwise, float64 (exact below 2^53)."""
    return counts * (counts - 1) / 2


def _lift(observed: torch.Tensor, chance: torch.Tensor) -> torch.Tensor:
    """``(observed - chance) / (1 - chance)``, NaN where chance is 1."""
    room = 1.0 - chance
    return torch.where(room > 0, (observed - chance) / room.clamp_min(1e-300), torch.nan)


def _finite(value: torch.Tensor | float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _chance_stats(agreement: NeuronAgreement) -> ChanceStats:
    chance = _finite(agreement.random.mean())
    same = _finite(agreement.same_label.mean())
    different = _finite(agreement.different_label.mean())

    def lift(observed: float | None) -> float | None:
        if chance is None or observed is None:
            return None
        # Chance 1: every neuron dead, every pair agrees everywhere; nothing is separated, so the
        # lifts are 0 (not 0/0), which gates and verdicts can read.
        return 0.0 if chance >= 1.0 else (observed - chance) / (1.0 - chance)

    lift_same, lift_different = lift(same), lift(different)
    return ChanceStats(
        neurons=int(agreement.random.numel()),
        chance=chance,
        same_label=same,
        different_label=different,
        lift_same=lift_same,
        lift_different=lift_different,
        separation=lift_same - lift_different
        if lift_same is not None and lift_different is not None
        else None,
    )
