"""Chance-corrected PS against a brute-force reference that enumerates every pair, and invariants:
random labels give lift ≈ 0, permuting neurons or splitting the samples into merged blocks changes
nothing."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from worker.engine.metrics.chance import ChanceSummary, LabelRegionCounts
from worker.engine.metrics.patterns import PatternStore


def _brute_force(layers: list[np.ndarray], labels: np.ndarray) -> dict[str, list[float]]:
    """Per-neuron random / same / different-label agreement by enumerating every pair (i < j)."""
    regions = np.concatenate(layers, axis=1)
    n, m = regions.shape
    agree = {"random": np.zeros(m), "same": np.zeros(m), "different": np.zeros(m)}
    pairs = {"random": 0, "same": 0, "different": 0}
    for i, j in itertools.combinations(range(n), 2):
        equal = (regions[i] == regions[j]).astype(float)
        kind = "same" if labels[i] == labels[j] else "different"
        for key in ("random", kind):
            agree[key] += equal
            pairs[key] += 1
    return {key: list(agree[key] / pairs[key]) for key in agree}


def _random_patterns(
    seed: int, samples: int, widths: list[int], regions: list[int], classes: int
) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    layers = []
    for width, count in zip(widths, regions, strict=True):
        # Label-dependent region probabilities so same-label pairs agree more than chance.
        base = rng.integers(0, count, (samples, width))
        by_label = rng.integers(0, count, (classes, width))
        keep = rng.random((samples, width)) < 0.5
        layers.append(np.where(keep, by_label[labels], base).astype(np.uint8))
    return layers, labels


def _flat(summary: ChanceSummary) -> dict[str, float | None]:
    """Every number of a summary by its path, for comparisons up to float rounding."""
    out: dict[str, float | None] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        else:
            assert value is None or isinstance(value, int | float)
            out[prefix] = value

    walk("", dataclasses.asdict(summary))
    return out


def _same(a: ChanceSummary, b: ChanceSummary) -> None:
    left, right = _flat(a), _flat(b)
    assert left.keys() == right.keys()
    for key, value in left.items():
        assert value == pytest.approx(right[key], rel=1e-12, abs=1e-12), key


def _counts(layers: list[np.ndarray], labels: np.ndarray, regions: list[int]) -> LabelRegionCounts:
    counts = LabelRegionCounts([layer.shape[1] for layer in layers], regions)
    counts.update([torch.from_numpy(layer) for layer in layers], torch.from_numpy(labels))
    return counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_neuron_and_network_agreement_match_pair_enumeration(seed: int) -> None:
    widths, regions = [5, 3, 4], [2, 4, 3]
    layers, labels = _random_patterns(seed, 37, widths, regions, classes=4)
    counts = _counts(layers, labels, regions)
    reference = _brute_force(layers, labels)
    got = [counts.neuron_agreement(layer) for layer in range(3)]
    for key, attr in (("random", "random"), ("same", "same_label"), ("different", "different_label")):
        mine = torch.cat([getattr(a, attr) for a in got]).numpy()
        np.testing.assert_allclose(mine, reference[key], rtol=0, atol=1e-12)

    summary = counts.result(dying_threshold=0.9)
    chance = float(np.mean(reference["random"]))
    same, different = float(np.mean(reference["same"])), float(np.mean(reference["different"]))
    net = summary.network
    assert net.chance == pytest.approx(chance, abs=1e-12)
    assert net.same_label == pytest.approx(same, abs=1e-12)
    assert net.different_label == pytest.approx(different, abs=1e-12)
    assert net.lift_same == pytest.approx((same - chance) / (1 - chance), abs=1e-12)
    assert net.lift_different == pytest.approx((different - chance) / (1 - chance), abs=1e-12)
    assert net.separation == pytest.approx((same - different) / (1 - chance), abs=1e-12)
    assert net.lift_same is not None and net.lift_same > 0.1
    assert summary.pairs == 37 * 36 // 2
    start = 0
    for layer, width in enumerate(widths):
        ref_layer = np.mean(reference["random"][start : start + width])
        assert summary.layers[layer].chance.chance == pytest.approx(ref_layer, abs=1e-12)
        ref_diff = reference["different"][start : start + width]
        assert summary.layers[layer].label_dying_count == sum(d >= 0.9 for d in ref_diff)
        assert summary.layers[layer].different_label_agreement_mean == pytest.approx(
            np.mean(ref_diff), abs=1e-12
        )
        start += width


def test_random_labels_give_lift_near_zero() -> None:
    rng = np.random.default_rng(5)
    layers = [rng.integers(0, 2, (600, 64)).astype(np.uint8), rng.integers(0, 4, (600, 32)).astype(np.uint8)]
    # Skewed occupancy, so chance is far from 0.5 and raw PS alone would mislead.
    layers[0][rng.random((600, 64)) < 0.7] = 1
    labels = rng.integers(0, 10, 600)
    net = _counts(layers, labels, [2, 4]).result(0.9).network
    assert net.chance is not None and net.chance > 0.55
    assert net.lift_same is not None and abs(net.lift_same) < 0.01
    assert net.lift_different is not None and abs(net.lift_different) < 0.002
    assert net.separation is not None and abs(net.separation) < 0.01


def test_permuting_neurons_or_splitting_samples_changes_nothing() -> None:
    layers, labels = _random_patterns(7, 80, [6, 5], [3, 2], classes=3)
    whole = _counts(layers, labels, [3, 2]).result(0.8)

    rng = np.random.default_rng(0)
    permuted = [layer[:, rng.permutation(layer.shape[1])] for layer in layers]
    shuffled = _counts(permuted, labels, [3, 2]).result(0.8)
    _same(shuffled, whole)

    # Blocks that each miss some labels, merged in another order: exactly the same counts.
    order = np.argsort(labels, kind="stable")
    blocks = np.array_split(order, 3)
    merged = LabelRegionCounts([6, 5], [3, 2])
    for block in reversed(blocks):
        part = LabelRegionCounts([6, 5], [3, 2])
        part.update([torch.from_numpy(layer[block]) for layer in layers], torch.from_numpy(labels[block]))
        merged.merge(part)
    assert merged.labels == [0, 1, 2]
    _same(merged.result(0.8), whole)
    for layer in range(2):
        reference = _counts(layers, labels, [3, 2]).layer_counts(layer)
        assert torch.equal(merged.layer_counts(layer), reference)


def label_region_counts(store: PatternStore, labels: torch.Tensor, *, block: int) -> LabelRegionCounts:
    """The counts of a filled store, read back ``block`` samples at a time."""
    counts = LabelRegionCounts(store.neurons, store.regions)
    for start in range(0, store.filled, block):
        index = torch.arange(start, min(start + block, store.filled), dtype=torch.int64)
        counts.update([store.rows(layer, index) for layer in range(store.num_layers)], labels[index])
    return counts


def test_store_counts_match_direct_counts_on_packed_layers() -> None:
    layers, labels = _random_patterns(3, 50, [19, 7], [2, 5], classes=3)
    store = PatternStore(50, [19, 7], [2, 5])
    for start in range(0, 50, 16):
        store.append([torch.from_numpy(layer[start : start + 16]) for layer in layers])
    from_store = label_region_counts(store, torch.from_numpy(labels), block=7)
    _same(from_store.result(0.9), _counts(layers, labels, [2, 5]).result(0.9))


def test_dead_layer_has_zero_lift_and_every_neuron_label_dying() -> None:
    layers = [np.ones((10, 4), dtype=np.uint8)]
    labels = np.arange(10) % 2
    summary = _counts(layers, labels, [2]).result(0.9)
    assert summary.network.chance == 1.0
    # Every pair agrees on every neuron: nothing is separated (0, not 0/0).
    assert summary.network.lift_same == 0.0 and summary.network.separation == 0.0
    assert summary.layers[0].label_dying_count == 4
    assert summary.layers[0].neuron_lift_mean is None


def test_one_sample_per_label_leaves_same_label_undefined() -> None:
    layers = [np.array([[0, 1], [1, 1], [0, 0]], dtype=np.uint8)]
    summary = _counts(layers, np.array([4, 9, 2]), [2]).result(0.9)
    assert summary.same_label_pairs == 0
    assert summary.network.same_label is None and summary.network.lift_same is None
    assert summary.network.different_label is not None and math.isfinite(summary.network.different_label)


def test_bad_inputs_say_what_was_expected() -> None:
    counts = LabelRegionCounts([3], [2])
    with pytest.raises(Exception, match=r"labels: expected a \[2\] integer tensor"):
        counts.update([torch.zeros(2, 3, dtype=torch.uint8)], torch.zeros(2))
    with pytest.raises(Exception, match="expected region indices < 2, got 3"):
        counts.update([torch.full((2, 3), 3, dtype=torch.uint8)], torch.zeros(2, dtype=torch.int64))
    with pytest.raises(Exception, match="merge: expected counts of layers"):
        counts.merge(LabelRegionCounts([4], [2]))
