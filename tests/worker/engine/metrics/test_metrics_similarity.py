"""Pattern similarity against brute-force per-pair loops, and its invariants."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from neuronscope.contracts.config import PairSample, default_lambdas
from worker.engine.errors import AnalysisError
from worker.engine.metrics import (
    AllPairs,
    CountHistogram,
    KindSummary,
    PairLists,
    PatternStore,
    SimilaritySummary,
    equal_count_matrix,
    pair_counts,
    pattern_similarity,
    select_pairs,
)
from worker.engine.metrics import similarity as similarity_module

N = 23
NEURONS = [13, 5, 40, 70]
REGIONS = [2, 3, 5, 2]
LAMBDAS = default_lambdas()


def _patterns(seed: int = 0, n: int = N) -> list[np.ndarray]:
    """Random patterns with some duplicated samples, so that PS takes extreme values too."""
    rng = np.random.default_rng(seed)
    layers = [rng.integers(0, r, size=(n, m), dtype=np.uint8) for m, r in zip(NEURONS, REGIONS, strict=True)]
    for layer in layers:
        layer[1] = layer[n - 1]
        layer[:, :2] = 0
    return layers


def resolve_labels(n: int = N) -> np.ndarray:
    return np.arange(n) * 7 % 4


def _store(layers: Sequence[np.ndarray], *, pack: bool = True, batch: int = 5) -> PatternStore:
    n = layers[0].shape[0]
    store = PatternStore(n, [a.shape[1] for a in layers], REGIONS, pack_bits=pack)
    for start in range(0, n, batch):
        store.append([torch.from_numpy(a[start : start + batch]) for a in layers])
    return store


def _reference_counts(layers: Sequence[np.ndarray], i: int, j: int) -> list[int]:
    """Equal neurons of samples i and j per layer, one neuron at a time."""
    return [sum(int(a[i, m] == a[j, m]) for m in range(a.shape[1])) for a in layers]


def _reference_kind(layers: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]]) -> KindSummary:
    """PS_E, its spread and PS_D of listed pairs by numpy, from per-pair brute-force counts."""
    if not pairs:
        nan = [math.nan] * len(layers)
        return KindSummary(0, math.nan, math.nan, [math.nan] * len(LAMBDAS), nan, nan)
    per_pair = np.array([_reference_counts(layers, i, j) for i, j in pairs], dtype=np.float64)
    widths = np.array([a.shape[1] for a in layers], dtype=np.float64)
    ps = per_pair.sum(1) / widths.sum()
    layer_ps = per_pair / widths
    return KindSummary(
        pairs=len(pairs),
        mean=float(ps.mean()),
        std=float(ps.std()),
        ps_d=[float(np.mean(ps > lam)) for lam in LAMBDAS],
        layer_mean=[float(v) for v in layer_ps.mean(0)],
        layer_std=[float(v) for v in layer_ps.std(0)],
    )


def _assert_kind(got: KindSummary, expected: KindSummary) -> None:
    assert got.pairs == expected.pairs
    assert got.ps_d == pytest.approx(expected.ps_d, nan_ok=True, abs=0)
    np.testing.assert_allclose([got.mean, *got.layer_mean], [expected.mean, *expected.layer_mean], rtol=1e-12)
    np.testing.assert_allclose(
        [got.std, *got.layer_std], [expected.std, *expected.layer_std], rtol=1e-9, atol=1e-12
    )


def _assert_same_summary(a: SimilaritySummary, b: SimilaritySummary) -> None:
    for kind in ("random", "same_label", "different_label"):
        x, y = getattr(a, kind), getattr(b, kind)
        assert (x.pairs, x.ps_d) == (y.pairs, y.ps_d)
        np.testing.assert_allclose(
            [x.mean, x.std, *x.layer_mean, *x.layer_std],
            [y.mean, y.std, *y.layer_mean, *y.layer_std],
            rtol=1e-12,
            atol=1e-15,
        )


def test_pair_counts_and_matrix_match_brute_force() -> None:
    layers = _patterns()
    store = _store(layers)
    pairs = torch.tensor([[0, 1], [3, 7], [7, 3], [22, 0], [5, 5], [10, 11]])
    expected = np.array([_reference_counts(layers, i, j) for i, j in pairs.tolist()]).T
    np.testing.assert_array_equal(pair_counts(store, pairs).numpy(), expected)
    full = np.array([[sum(_reference_counts(layers, i, j)) for j in range(N)] for i in range(N)])
    np.testing.assert_array_equal(equal_count_matrix(store).numpy(), full)
    layer_two = np.array([[_reference_counts(layers, i, j)[2] for j in range(N)] for i in range(4, 9)])
    np.testing.assert_array_equal(equal_count_matrix(store, 2, row_start=4, row_stop=9).numpy(), layer_two)


def test_all_pairs_summary_matches_brute_force_per_kind_and_layer() -> None:
    layers, labels = _patterns(1), resolve_labels()
    summary = pattern_similarity(_store(layers), AllPairs(torch.from_numpy(labels)), LAMBDAS)
    every = [(i, j) for i in range(N) for j in range(i + 1, N)]
    assert summary.selection == "all" and summary.lambdas == LAMBDAS
    _assert_kind(summary.random, _reference_kind(layers, every))
    _assert_kind(
        summary.same_label, _reference_kind(layers, [(i, j) for i, j in every if labels[i] == labels[j]])
    )
    _assert_kind(
        summary.different_label, _reference_kind(layers, [(i, j) for i, j in every if labels[i] != labels[j]])
    )


@pytest.mark.parametrize("spec", [PairSample(count=30, seed=3), [(0, 1), (3, 7), (9, 2), (4, 8), (22, 21)]])
def test_listed_summary_matches_brute_force(spec: PairSample | list[tuple[int, int]]) -> None:
    layers, labels = _patterns(2), resolve_labels()
    pairs = select_pairs(spec, N, torch.from_numpy(labels))
    assert isinstance(pairs, PairLists)
    summary = pattern_similarity(_store(layers), pairs, LAMBDAS)
    assert summary.selection == pairs.selection
    for kind in ("random", "same_label", "different_label"):
        listed = [tuple(p) for p in getattr(pairs, kind).tolist()]
        _assert_kind(getattr(summary, kind), _reference_kind(layers, listed))


def test_all_pairs_equals_listing_every_pair() -> None:
    layers, labels = _patterns(3), torch.from_numpy(resolve_labels())
    store = _store(layers)
    matrix = pattern_similarity(store, AllPairs(labels), LAMBDAS)
    listed = pattern_similarity(store, AllPairs(labels).materialize(), LAMBDAS)
    assert listed.selection == "all"
    _assert_same_summary(matrix, listed)


def test_self_similarity_is_one_and_matrix_is_symmetric() -> None:
    store = _store(_patterns(4))
    matrix = equal_count_matrix(store)
    assert torch.equal(matrix, matrix.T)
    assert bool((matrix.diagonal() == store.total_neurons).all())
    same = pair_counts(store, torch.arange(N).repeat(2, 1).T).sum(0)
    assert bool((same == store.total_neurons).all())
    assert int(matrix[1, N - 1]) == store.total_neurons


def test_permuting_neurons_changes_nothing() -> None:
    layers, labels = _patterns(5), torch.from_numpy(resolve_labels())
    rng = np.random.default_rng(0)
    shuffled = [a[:, rng.permutation(a.shape[1])] for a in layers]
    for pairs in (AllPairs(labels), select_pairs(PairSample(count=25, seed=0), N, labels)):
        _assert_same_summary(
            pattern_similarity(_store(layers), pairs, LAMBDAS),
            pattern_similarity(_store(shuffled), pairs, LAMBDAS),
        )


def test_bit_packed_and_unpacked_storage_agree() -> None:
    layers, labels = _patterns(6), torch.from_numpy(resolve_labels())
    packed, unpacked = _store(layers, pack=True), _store(layers, pack=False)
    assert packed.is_packed(0) and not unpacked.is_packed(0)
    assert torch.equal(equal_count_matrix(packed), equal_count_matrix(unpacked))
    for pairs in (AllPairs(labels), select_pairs(PairSample(count=40, seed=1), N, labels)):
        _assert_same_summary(
            pattern_similarity(packed, pairs, LAMBDAS), pattern_similarity(unpacked, pairs, LAMBDAS)
        )


@pytest.mark.parametrize(
    ("row_block", "chunk_neurons", "chunk_pairs"), [(1, 8, 1), (5, 16, 7), (22, 24, 3), (None, None, None)]
)
def test_chunk_sizes_do_not_change_results(
    row_block: int | None, chunk_neurons: int | None, chunk_pairs: int | None
) -> None:
    layers, labels = _patterns(7), torch.from_numpy(resolve_labels())
    store = _store(layers, batch=4)
    sampled = select_pairs(PairSample(count=40, seed=2), N, labels)
    for pairs in (AllPairs(labels), sampled):
        _assert_same_summary(
            pattern_similarity(store, pairs, LAMBDAS),
            pattern_similarity(
                store,
                pairs,
                LAMBDAS,
                row_block=row_block,
                chunk_neurons=chunk_neurons,
                chunk_pairs=chunk_pairs,
            ),
        )
    assert isinstance(sampled, PairLists)
    assert torch.equal(
        pair_counts(store, sampled.random), pair_counts(store, sampled.random, chunk_pairs=chunk_pairs)
    )


def test_float32_sums_are_flushed_before_they_could_lose_exactness(monkeypatch: pytest.MonkeyPatch) -> None:
    layers = _patterns(8)
    store = _store(layers)
    expected = equal_count_matrix(store)
    monkeypatch.setattr(similarity_module, "_FLOAT32_EXACT", 16)
    assert torch.equal(equal_count_matrix(store, chunk_neurons=8), expected)


def test_word_popcount_counts_sign_bits() -> None:
    words = torch.tensor([[-1, 0], [-(2**63), 1], [0x0123456789ABCDEF, -2]])
    expected = [sum(bin(w % 2**64).count("1") for w in row) for row in words.tolist()]
    assert similarity_module._popcount_words(words).tolist() == expected == [64, 2, 95]


def test_ps_d_is_strictly_greater_and_exact_at_grid_points() -> None:
    hist = CountHistogram(10)
    hist.add(torch.tensor([3, 3, 10, 0, 7]))
    assert hist.ps_d([0.0, 0.29, 0.3, 0.7, 0.99, 1.0]) == [0.8, 0.8, 0.4, 0.2, 0.2, 0.0]
    assert hist.mean() == pytest.approx(23 / 50)
    assert hist.std() == pytest.approx(np.std([0.3, 0.3, 1.0, 0.0, 0.7]))
    with pytest.raises(AnalysisError, match=r"values in \[0, 10\], got values in \[0, 11\]"):
        hist.add(torch.tensor([0, 11]))


def test_kinds_without_pairs_are_nan() -> None:
    layers = _patterns(9, n=4)
    store = _store(layers)
    summary = pattern_similarity(store, AllPairs(torch.zeros(4, dtype=torch.int64)), [0.5])
    assert summary.different_label.pairs == 0
    assert math.isnan(summary.different_label.mean) and math.isnan(summary.different_label.std)
    assert math.isnan(summary.different_label.ps_d[0]) and all(
        map(math.isnan, summary.different_label.layer_mean)
    )
    assert summary.same_label.pairs == summary.random.pairs == 6


def test_progress_reaches_one_and_can_cancel() -> None:
    store, labels = _store(_patterns(10)), torch.from_numpy(resolve_labels())
    seen: list[float] = []
    pattern_similarity(store, AllPairs(labels), [0.5], row_block=4, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 6 * len(NEURONS)

    def cancel(done: float) -> None:
        raise AnalysisError("stopped", code="cancelled")

    with pytest.raises(AnalysisError, match="stopped"):
        pattern_similarity(store, AllPairs(labels), [0.5], progress=cancel)


def test_incomplete_store_and_bad_arguments_are_refused() -> None:
    store = PatternStore(4, [8], [2])
    store.append([torch.zeros(2, 8, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match="expected all 4 samples, got 2"):
        pattern_similarity(store, AllPairs(torch.zeros(4, dtype=torch.int64)), [0.5])
    with pytest.raises(AnalysisError, match=r"expected a \[P, 2\] int64 tensor"):
        pair_counts(store, torch.tensor([0, 1]))
    full = _store(_patterns(0))
    with pytest.raises(AnalysisError, match="row_block: expected None or > 0, got -1"):
        pattern_similarity(full, AllPairs(torch.from_numpy(resolve_labels())), [0.5], row_block=-1)
