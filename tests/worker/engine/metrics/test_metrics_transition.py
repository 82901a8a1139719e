"""Transition density along a segment, fed chunk by chunk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from worker.engine.errors import AnalysisError
from worker.engine.metrics import TransitionCounter, interpolation_points, path_transitions, region_indices


def _reference(layers: Sequence[np.ndarray]) -> tuple[int, int]:
    """TD and neuron changes by comparing the full pattern of each consecutive pair of points."""
    full = np.concatenate(layers, axis=1)
    transitions = changes = 0
    for i in range(full.shape[0] - 1):
        differ = [int(full[i, m] != full[i + 1, m]) for m in range(full.shape[1])]
        transitions += int(any(differ))
        changes += sum(differ)
    return transitions, changes


def _path(points: int, seed: int) -> list[np.ndarray]:
    """Patterns with runs of repeated points, so that some consecutive pairs do not transition."""
    rng = np.random.default_rng(seed)
    repeat = rng.integers(0, 2, size=points).astype(bool)
    layers = []
    for width, regions in ((6, 2), (3, 4)):
        layer = rng.integers(0, regions, size=(points, width), dtype=np.uint8)
        for i in range(1, points):
            if repeat[i]:
                layer[i] = layer[i - 1]
        layers.append(layer)
    return layers


def _feed(layers: Sequence[np.ndarray], chunk: int) -> TransitionCounter:
    counter = TransitionCounter()
    for start in range(0, layers[0].shape[0], chunk):
        counter.update([torch.from_numpy(a[start : start + chunk]) for a in layers])
    return counter


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 64])
def test_counter_matches_brute_force_for_any_chunk_size(chunk: int) -> None:
    layers = _path(40, seed=chunk)
    counter = _feed(layers, chunk)
    assert (counter.transitions, counter.neuron_changes) == _reference(layers)
    assert counter.points == 40
    assert 0 < counter.transitions < 39


def test_chunk_size_does_not_change_counts() -> None:
    layers = _path(50, seed=0)
    counts = {(c.transitions, c.neuron_changes) for c in (_feed(layers, k) for k in (1, 4, 9, 50))}
    assert len(counts) == 1


def test_counter_keeps_only_the_last_point() -> None:
    counter = _feed(_path(30, seed=1), 7)
    assert [t.shape for t in counter._last] == [(1, 6), (1, 3)]


def test_reset_starts_a_new_path() -> None:
    first, second = _path(10, seed=2), _path(12, seed=3)
    counter = _feed(first, 4)
    counter.reset()
    for start in range(0, 12, 5):
        counter.update([torch.from_numpy(a[start : start + 5]) for a in second])
    assert (counter.transitions, counter.neuron_changes, counter.points) == (*_reference(second), 12)


def test_path_transitions_match_one_counter_per_path() -> None:
    paths = [_path(9, seed=s) for s in range(4)]
    stacked = [torch.from_numpy(np.concatenate([p[layer] for p in paths])) for layer in range(2)]
    td, changes = path_transitions(stacked, 9)
    assert td.tolist() == [_reference(p)[0] for p in paths]
    assert changes.tolist() == [_reference(p)[1] for p in paths]


def _mlp_patterns(points: torch.Tensor) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(5, 16, generator=gen)
    second = torch.randn(16, 8, generator=gen)
    hidden = points @ first
    return [
        region_indices(hidden, torch.tensor([0.0])),
        region_indices(hidden.relu() @ second, torch.tensor([-0.5, 0.0, 0.5])),
    ]


def test_segment_through_a_small_network_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    counter = TransitionCounter()
    for start in range(0, 257, 64):
        counter.update(_mlp_patterns(interpolation_points(x1, x2, 257, start, min(257, start + 64))))
    whole = [t.numpy() for t in _mlp_patterns(interpolation_points(x1, x2, 257))]
    assert (counter.transitions, counter.neuron_changes) == _reference(whole)
    assert counter.transitions > 0


def test_identical_endpoints_have_no_transitions() -> None:
    x = torch.randn(5, generator=torch.Generator().manual_seed(2))
    counter = TransitionCounter()
    counter.update(_mlp_patterns(interpolation_points(x, x.clone(), 100)))
    assert (counter.transitions, counter.neuron_changes) == (0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("points", [2, 7, 512])
def test_interpolation_hits_both_endpoints_exactly(dtype: torch.dtype, points: int) -> None:
    gen = torch.Generator().manual_seed(points)
    x1, x2 = (torch.randn(3, 4, generator=gen, dtype=dtype) * 10 for _ in range(2))
    whole = interpolation_points(x1, x2, points)
    assert whole.shape == (points, 3, 4) and whole.dtype == dtype
    assert torch.equal(whole[0], x1) and torch.equal(whole[-1], x2)
    steps = torch.arange(points, dtype=torch.float64).reshape(-1, 1, 1) / (points - 1)
    torch.testing.assert_close(whole, (x1.double() + steps * (x2.double() - x1.double())).to(dtype))
    pieces = [interpolation_points(x1, x2, points, s, min(points, s + 3)) for s in range(0, points, 3)]
    assert torch.equal(torch.cat(pieces), whole)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(AnalysisError, match=r"got points=1"):
        interpolation_points(torch.zeros(2), torch.ones(2), 1)
    with pytest.raises(AnalysisError, match="floating tensors of one shape") as caught:
        interpolation_points(torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64), 3)
    assert caught.value.code == "dataset_invalid"
    counter = TransitionCounter()
    counter.update([torch.zeros(2, 3, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match=r"expected \[b, 3\] uint8"):
        counter.update([torch.zeros(2, 4, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match="dividing the 5 rows"):
        path_transitions([torch.zeros(5, 3, dtype=torch.uint8)], 2)
