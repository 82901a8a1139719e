"""Flat-region death (rarely active neurons, dead data points) against a per-sample, per-neuron
loop, and merged blocks against one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.metrics.flat import FlatCounts, flat_regions
from worker.engine.metrics.patterns import PatternStore


@pytest.mark.parametrize(
    ("op_type", "breakpoints", "expected"),
    [
        ("relu", [0.0], [0]),
        ("relu", [-0.5, 0.0, 0.5], [0, 1]),
        ("relu6", [0.0, 6.0], [0, 2]),
        ("hardtanh", [-1.0, 1.0], [0, 2]),
        ("hard_sigmoid", [-3.0, 3.0], [0, 2]),
        ("hard_sigmoid", [-0.5, 0.0, 0.5], []),
        ("hardswish", [-3.0, 3.0], [0]),
        ("leakyrelu", [0.0], []),
        ("sigmoid", [-0.5, 0.0, 0.5], []),
        ("relu", [0.5], []),
    ],
)
def test_flat_regions_lie_inside_the_constant_pieces(
    op_type: str, breakpoints: list[float], expected: list[int]
) -> None:
    assert flat_regions(op_type, breakpoints) == expected


def _reference(layers: list[np.ndarray], flat: list[list[int]]) -> tuple[int, list[int], list[int]]:
    samples = layers[0].shape[0]
    dead_points = 0
    for i in range(samples):
        if any(flat[k] and all(v in flat[k] for v in layers[k][i]) for k in range(len(layers))):
            dead_points += 1
    rarely, never = [], []
    for k, layer in enumerate(layers):
        active = [sum(1 for i in range(samples) if layer[i, n] not in flat[k]) for n in range(layer.shape[1])]
        rarely.append(sum(1 for a in active if a < 0.01 * samples))
        never.append(sum(1 for a in active if a == 0))
    return dead_points, rarely, never


def _patterns(seed: int, samples: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    relu = (rng.random((samples, 6)) < rng.random(6) * 0.3).astype(np.uint8)  # sparse: many dead points
    relu[:, 0] = 0  # never active
    relu[:3, 1] = 1  # active on 3 of 400 inputs: rarely active
    relu[3:, 1] = 0
    relu6 = rng.integers(0, 3, (samples, 4)).astype(np.uint8)
    smooth = rng.integers(0, 4, (samples, 5)).astype(np.uint8)
    return [relu, relu6, smooth]


def test_counts_match_a_per_sample_loop_and_merge_exactly() -> None:
    layers, flat = _patterns(0, 400), [[0], [0, 2], []]
    counts = FlatCounts([6, 4, 5], flat)
    counts.update([torch.from_numpy(layer) for layer in layers])
    summary = counts.result()
    dead_points, rarely, never = _reference(layers, flat)
    assert summary.dead_data_points == dead_points > 0
    assert [s.rarely_active_count for s in summary.layers] == rarely
    assert [s.never_active_count for s in summary.layers] == never
    assert rarely[0] >= 2 and never[0] >= 1 and rarely[2] == never[2] == 0

    merged = FlatCounts([6, 4, 5], flat)
    for block in np.array_split(np.arange(400), 5)[::-1]:
        part = FlatCounts([6, 4, 5], flat)
        part.update([torch.from_numpy(layer[block]) for layer in layers])
        merged.merge(part)
    assert merged.result() == summary

    store = PatternStore(400, [6, 4, 5], [2, 3, 4])
    store.append([torch.from_numpy(layer) for layer in layers])
    assert flat_counts(store, flat, block=33).result() == summary


def test_merge_refuses_other_layers() -> None:
    with pytest.raises(Exception, match="merge: expected counts of layers"):
        FlatCounts([3], [[0]]).merge(FlatCounts([3], [[]]))


def flat_counts(store: PatternStore, flat: list[list[int]], *, block: int) -> FlatCounts:
    """The counts of a filled store, read back ``block`` samples at a time."""
    counts = FlatCounts(store.neurons, flat)
    for start in range(0, store.filled, block):
        index = torch.arange(start, min(start + block, store.filled), dtype=torch.int64)
        counts.update([store.rows(layer, index) for layer in range(store.num_layers)])
    return counts
