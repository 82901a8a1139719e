"""Which sample pairs a metric looks at: every pair, a random sample, or an explicit list.

``"all"`` gives :class:`AllPairs`, which is never listed: pattern similarity evaluates it on the
full similarity matrix. Samples and lists give :class:`PairLists`, three ``[P, 2]`` int64 tensors
evaluated by gathering rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from neuronscope.contracts.config import PairSample, PairSpec
from worker.engine.metrics._checks import describe, require

_RANDOM, _SAME, _DIFFERENT = 0, 1, 2


@dataclass(frozen=True)
class PairLists:
    """Listed pairs of each kind, each ``[P, 2]`` int64 sample indices.

    ``random`` is the sample (or the list itself); ``same_label`` / ``different_label`` hold pairs
    whose labels match / differ. ``selection`` is ``"sample"``, ``"explicit"`` or ``"all"`` (the
    latter only from :meth:`AllPairs.materialize`).
    """

    selection: Literal["all", "sample", "explicit"]
    random: torch.Tensor
    same_label: torch.Tensor
    different_label: torch.Tensor


@dataclass(frozen=True)
class AllPairs:
    """Every unordered pair ``i < j`` of ``labels.numel()`` samples, split by label.

    Example:
        >>> pairs = AllPairs(torch.tensor([0, 0, 1]))
        >>> pairs.sizes()
        (3, 1, 2)
        >>> pairs.materialize().different_label
        tensor([[0, 2],
                [1, 2]])
    """

    labels: torch.Tensor
    selection: Literal["all"] = "all"

    @property
    def n_samples(self) -> int:
        return int(self.labels.numel())

    def sizes(self) -> tuple[int, int, int]:
        """Number of (random = all, same-label, different-label) pairs."""
        random, same, different = (_family(self.labels, kind).size for kind in (_RANDOM, _SAME, _DIFFERENT))
        return random, same, different

    def materialize(self) -> PairLists:
        """List every pair (``N (N - 1) / 2`` rows for ``random``); only for small ``N``."""
        lists = [_family(self.labels, kind).everything() for kind in (_RANDOM, _SAME, _DIFFERENT)]
        return PairLists("all", *lists)


PairSets = AllPairs | PairLists


def select_pairs(spec: PairSpec, n_samples: int, labels: torch.Tensor) -> PairSets:
    """The pairs ``spec`` asks for among ``n_samples`` samples with ``labels`` (``[N]`` int64).

    - ``"all"``: :class:`AllPairs`.
    - :class:`PairSample` ``{count, seed}``: ``count`` distinct pairs ``i < j`` drawn uniformly
      without replacement from all pairs, and as many from the same-label and from the
      different-label pairs, each kind with its own generator seeded from ``seed``; a kind with
      fewer than ``count`` pairs gives all of them. Pairs come in random order.
    - an explicit list of ``[i, j]``: ``random`` is the list in the user's order; same / different
      label is its partition, order kept. Indices outside ``[0, N)`` or ``i == j`` raise
      ``AnalysisError(code="pairs_invalid")``.

    Example:
        >>> labels = torch.tensor([0, 1, 0, 1])
        >>> chosen = select_pairs([(3, 1), (0, 1)], 4, labels)
        >>> chosen.same_label, chosen.different_label
        (tensor([[3, 1]]), tensor([[0, 1]]))
        >>> sampled = select_pairs(PairSample(count=10, seed=0), 4, labels)
        >>> len(sampled.random), len(sampled.same_label), len(sampled.different_label)
        (6, 2, 4)
    """
    labels = _checked_labels(labels, n_samples)
    if isinstance(spec, PairSample):
        drawn = [
            _family(labels, kind).sample(spec.count, _generator(spec.seed, kind))
            for kind in (_RANDOM, _SAME, _DIFFERENT)
        ]
        return PairLists("sample", *drawn)
    if isinstance(spec, list):
        listed = _checked_list(spec, n_samples)
        return PairLists("explicit", listed, *split_by_label(listed, labels))
    require(
        spec == "all",
        f"pairs: expected 'all', {{count, seed}} or a list of [i, j], got {spec!r}",
        code="pairs_invalid",
    )
    return AllPairs(labels)


def split_by_label(pairs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``[P, 2]`` pairs into (same-label, different-label) rows, order kept.

    Example:
        >>> split_by_label(torch.tensor([[0, 1], [0, 2]]), torch.tensor([5, 5, 7]))
        (tensor([[0, 1]]), tensor([[0, 2]]))
    """
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    return pairs[same], pairs[~same]


def _checked_labels(labels: torch.Tensor, n_samples: int) -> torch.Tensor:
    require(
        labels.shape == (n_samples,) and not labels.is_floating_point() and not labels.is_complex(),
        f"labels: expected a [{n_samples}] integer tensor, got {describe(labels)}",
        code="labels_invalid",
    )
    return labels.to(device="cpu", dtype=torch.int64)


def _checked_list(pairs: list[tuple[int, int]], n_samples: int) -> torch.Tensor:
    listed = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)
    bad = (listed < 0).any(1) | (listed >= n_samples).any(1) | (listed[:, 0] == listed[:, 1])
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        i, j = listed[first].tolist()
        require(
            False,
            f"pair {first} is [{i}, {j}]: expected two different sample indices in [0, {n_samples})",
            code="pairs_invalid",
        )
    return listed


def _generator(seed: int, kind: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 3 + kind) % 2**64)


@dataclass(frozen=True)
class _Family:
    """A set of pairs laid out by rows: position ``p`` pairs with positions ``lo[p]..hi[p]-1``
    (all ``> p``), and position ``p`` is sample ``order[p]``. Pair number ``k`` counts row by row."""

    order: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def size(self) -> int:
        return int((self.hi - self.lo).sum())

    def everything(self) -> torch.Tensor:
        return self.decode(torch.arange(self.size))

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return self.decode(_distinct(self.size, count, generator))

    def decode(self, k: torch.Tensor) -> torch.Tensor:
        ends = (self.hi - self.lo).cumsum(0)
        starts = ends - (self.hi - self.lo)
        row = torch.searchsorted(ends, k, right=True)
        partner = self.lo[row] + (k - starts[row])
        pairs = torch.stack([self.order[row], self.order[partner]], dim=1)
        return pairs.sort(dim=1).values


def _family(labels: torch.Tensor, kind: int) -> _Family:
    n = labels.numel()
    position = torch.arange(n)
    if kind == _RANDOM:
        return _Family(position, position + 1, torch.full((n,), n))
    order = torch.argsort(labels, stable=True)
    ordered = labels[order]
    class_end = torch.searchsorted(ordered, ordered, right=True)
    if kind == _SAME:
        return _Family(order, position + 1, class_end)
    return _Family(order, class_end, torch.full((n,), n))


def _distinct(total: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``min(count, total)`` distinct integers drawn uniformly from ``[0, total)``, random order."""
    if 2 * count >= total:
        return torch.randperm(total, generator=generator)[:count]
    chosen = torch.empty(0, dtype=torch.int64)
    while chosen.numel() < count:
        missing = count - chosen.numel()
        draw = torch.randint(total, (missing + missing // 4 + 16,), generator=generator)
        chosen = torch.unique(torch.cat([chosen, draw]))
    return chosen[torch.randperm(chosen.numel(), generator=generator)[:count]]
