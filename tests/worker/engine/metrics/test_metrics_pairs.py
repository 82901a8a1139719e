"""Pair selection: every pair, random samples per kind, explicit lists."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from neuronscope.contracts.config import PairSample
from worker.engine.errors import AnalysisError
from worker.engine.metrics import AllPairs, PairLists, select_pairs


def _brute_force_kinds(
    labels: list[int],
) -> tuple[set[tuple[int, int]], set[tuple[int, int]], set[tuple[int, int]]]:
    every = set(itertools.combinations(range(len(labels)), 2))
    same = {(i, j) for i, j in every if labels[i] == labels[j]}
    return every, same, every - same


def _as_set(pairs: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in pairs.tolist()}


LABELS = [3, 1, 3, 3, 0, 1, 7, 3, 1, 0, 0, 3]


def test_all_pairs_sizes_and_materialized_lists_match_brute_force() -> None:
    chosen = select_pairs("all", len(LABELS), torch.tensor(LABELS))
    assert isinstance(chosen, AllPairs)
    every, same, different = _brute_force_kinds(LABELS)
    assert chosen.sizes() == (len(every), len(same), len(different))
    listed = chosen.materialize()
    for got, expected in [
        (listed.random, every),
        (listed.same_label, same),
        (listed.different_label, different),
    ]:
        assert got.dtype == torch.int64 and got.shape == (len(expected), 2)
        assert _as_set(got) == expected


@pytest.mark.parametrize("count", [1, 5, 17, 18, 40, 66, 1000])
def test_sample_draws_distinct_pairs_of_each_kind_capped_by_what_exists(count: int) -> None:
    chosen = select_pairs(PairSample(count=count, seed=4), len(LABELS), torch.tensor(LABELS))
    assert isinstance(chosen, PairLists) and chosen.selection == "sample"
    for got, existing in zip(
        (chosen.random, chosen.same_label, chosen.different_label), _brute_force_kinds(LABELS), strict=True
    ):
        assert got.shape == (min(count, len(existing)), 2)
        assert len(_as_set(got)) == got.shape[0]
        assert _as_set(got) <= existing
        assert bool((got[:, 0] < got[:, 1]).all())


def test_sample_is_reproducible_and_seed_dependent() -> None:
    labels = torch.tensor(LABELS)
    first = select_pairs(PairSample(count=10, seed=1), len(LABELS), labels)
    again = select_pairs(PairSample(count=10, seed=1), len(LABELS), labels)
    other = select_pairs(PairSample(count=10, seed=2), len(LABELS), labels)
    assert isinstance(first, PairLists) and isinstance(again, PairLists) and isinstance(other, PairLists)
    assert torch.equal(first.random, again.random) and torch.equal(first.same_label, again.same_label)
    assert not torch.equal(first.random, other.random)


def test_sample_is_uniform_over_pairs_of_each_kind() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    every, same, different = _brute_force_kinds(labels.tolist())
    seen: list[Counter[tuple[int, int]]] = [Counter(), Counter(), Counter()]
    trials = 600
    for seed in range(trials):
        chosen = select_pairs(PairSample(count=2, seed=seed), 6, labels)
        assert isinstance(chosen, PairLists)
        for counter, got in zip(
            seen, (chosen.random, chosen.same_label, chosen.different_label), strict=True
        ):
            counter.update(_as_set(got))
    for counter, existing in zip(seen, (every, same, different), strict=True):
        assert set(counter) == existing
        expected = trials * 2 / len(existing)
        assert all(abs(n - expected) < 0.3 * expected for n in counter.values()), counter


def test_sample_from_many_pairs_uses_few_draws_and_stays_valid() -> None:
    n = 3000
    labels = torch.arange(n) % 7
    chosen = select_pairs(PairSample(count=5000, seed=0), n, labels)
    assert isinstance(chosen, PairLists)
    for got, same in ((chosen.random, None), (chosen.same_label, True), (chosen.different_label, False)):
        assert got.shape == (5000, 2)
        assert torch.unique(got[:, 0] * n + got[:, 1]).numel() == 5000
        assert bool((got[:, 0] < got[:, 1]).all()) and int(got.max()) < n
        if same is not None:
            assert bool(((labels[got[:, 0]] == labels[got[:, 1]]) == same).all())


def test_single_class_has_no_different_label_pairs() -> None:
    chosen = select_pairs(PairSample(count=3, seed=0), 4, torch.zeros(4, dtype=torch.int64))
    assert isinstance(chosen, PairLists)
    assert chosen.different_label.shape == (0, 2) and chosen.same_label.shape == (3, 2)
    assert select_pairs("all", 4, torch.zeros(4, dtype=torch.int64)).sizes() == (6, 6, 0)  # type: ignore[union-attr]


def test_explicit_list_keeps_user_order_and_partitions_by_label() -> None:
    pairs = [(5, 1), (0, 4), (2, 0), (1, 5), (11, 9)]
    chosen = select_pairs(pairs, len(LABELS), torch.tensor(LABELS))
    assert isinstance(chosen, PairLists) and chosen.selection == "explicit"
    assert chosen.random.tolist() == [list(p) for p in pairs]
    assert chosen.same_label.tolist() == [[5, 1], [2, 0], [1, 5]]
    assert chosen.different_label.tolist() == [[0, 4], [11, 9]]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(0, 1), (2, 12)], r"pair 1 is \[2, 12\]: expected two different sample indices in \[0, 12\)"),
        ([(-1, 3)], r"pair 0 is \[-1, 3\]"),
        ([(0, 1), (4, 4)], r"pair 1 is \[4, 4\]"),
    ],
)
def test_explicit_list_rejects_bad_pairs(pairs: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(AnalysisError, match=message) as caught:
        select_pairs(pairs, len(LABELS), torch.tensor(LABELS))
    assert caught.value.code == "pairs_invalid"


def test_labels_must_match_samples() -> None:
    with pytest.raises(AnalysisError, match=r"labels: expected a \[5\] integer tensor") as caught:
        select_pairs("all", 5, torch.zeros(4, dtype=torch.int64))
    assert caught.value.code == "labels_invalid"
    with pytest.raises(AnalysisError, match="integer tensor"):
        select_pairs("all", 2, torch.zeros(2))
