"""Every kind of neuron death (ReDo dormancy, DeepXplore coverage, rarely positive neurons, value
ranges) against per-sample, per-unit loops written from the papers' definitions, and merged
capture blocks against one pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.metrics.death import (
    COVERAGE_THRESHOLDS,
    DORMANT_TAUS,
    ValueAccumulator,
    region_distance,
    units_of,
)
from worker.engine.metrics.health import HealthAccumulator


def _layers(seed: int, samples: int) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]:
    """(pre, post, per-sample shape): a dense ReLU layer with planted dead and rarely positive
    neurons and a near-dormant one, a conv ReLU map (4 channels of 3×2, one channel dead), a tanh."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(samples, 7)).astype(np.float32)
    dense[:, 0] = -np.abs(dense[:, 0]) - 0.25  # dead: never positive, 0.25 below its breakpoint
    dense[:, 1] = -1.0
    dense[:2, 1] = 3.0  # positive on 2 inputs: rarely positive
    dense[:, 2] *= 1e-3  # tiny outputs: dormant at τ = 0.025
    conv = rng.normal(size=(samples, 4, 3, 2)).astype(np.float32)
    conv[:, 1] = -np.abs(conv[:, 1])
    conv = conv.reshape(samples, -1)
    smooth = rng.normal(size=(samples, 5)).astype(np.float32)
    smooth[:, 3] = -np.abs(smooth[:, 3]) - 0.1
    return [
        (dense, np.maximum(dense, 0), (7,)),
        (conv, np.maximum(conv, 0), (4, 3, 2)),
        (smooth, np.tanh(smooth), (5,)),
    ]


def _reference(pre: np.ndarray, post: np.ndarray, units: int) -> dict[str, object]:
    """The definitions, one sample and one unit at a time, in float64."""
    samples, neurons = post.shape
    per_unit = neurons // units
    mean_abs = [
        sum(abs(float(post[i, n])) for i in range(samples) for n in range(u * per_unit, (u + 1) * per_unit))
        / (samples * per_unit)
        for u in range(units)
    ]
    layer_mean = sum(mean_abs) / units
    dormant = [sum(1 for m in mean_abs if m / layer_mean <= tau) for tau in DORMANT_TAUS]
    best = [0.0] * units
    for i in range(samples):
        row = [float(v) for v in post[i]]
        low, high = min(row), max(row)
        scaled = [(v - low) / (high - low) if high > low else 0.0 for v in row]
        for u in range(units):
            best[u] = max(best[u], sum(scaled[u * per_unit : (u + 1) * per_unit]) / per_unit)
    covered = [sum(1 for b in best if b > t) for t in COVERAGE_THRESHOLDS]
    positive = [sum(1 for i in range(samples) if post[i, n] > 0) for n in range(neurons)]
    return {
        "dormant": tuple(dormant),
        "covered": tuple(covered),
        "rarely": sum(1 for p in positive if p < 0.01 * samples),
        "never": sum(1 for p in positive if p == 0),
        "pre_min": [min(float(pre[i, n]) for i in range(samples)) for n in range(neurons)],
        "pre_max": [max(float(pre[i, n]) for i in range(samples)) for n in range(neurons)],
    }


def _accumulator(
    layers: list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]], *, post_space: bool = False
) -> ValueAccumulator:
    return ValueAccumulator(
        [pre.shape[1] for pre, _, _ in layers], [units_of(s) for _, _, s in layers], post_space=post_space
    )


def test_every_measure_matches_the_definitions_sample_by_sample() -> None:
    layers = _layers(0, 300)
    values = _accumulator(layers)
    for start in range(0, 300, 64):
        values.update(
            [torch.from_numpy(pre[start : start + 64]) for pre, _, _ in layers],
            [torch.from_numpy(post[start : start + 64]) for _, post, _ in layers],
        )
    stats = values.result()
    for (pre, post, shape), found in zip(layers, stats, strict=True):
        expected = _reference(pre, post, units_of(shape))
        assert found.units == units_of(shape)
        assert found.dormant_counts == expected["dormant"]
        assert found.covered_counts == expected["covered"]
        assert found.rarely_positive_count == expected["rarely"]
        assert found.never_positive_count == expected["never"]
        ranges = values.ranges(stats.index(found), list(range(pre.shape[1])))
        assert [r.pre_min for r in ranges] == expected["pre_min"]
        assert [r.pre_max for r in ranges] == expected["pre_max"]
    dense, conv, smooth = stats
    assert dense.never_positive_count == 1 and dense.rarely_positive_count == 2
    assert dense.dormant_counts[:2] == (1, 2) and dense.dormant_counts[2] == 3  # dead, tiny, rarely positive
    assert conv.units == 4 and conv.dormant_counts[0] == 1  # the dead channel is one dormant unit
    assert smooth.dormant_counts[0] == 0 and smooth.never_positive_count == 1


@pytest.mark.parametrize("post_space", [False, True])
def test_joined_blocks_give_the_numbers_of_one_pass(post_space: bool) -> None:
    layers = _layers(1, 257)
    # Capture blocks start on batch boundaries: one pass and the blocks see the same batches.
    batches = [slice(0, 60), slice(60, 100), slice(100, 101), slice(101, 200), slice(200, 257)]
    whole = _accumulator(layers, post_space=post_space)
    parts = [_accumulator(layers, post_space=post_space) for _ in range(3)]
    for index, rows in enumerate(batches):
        pre = [torch.from_numpy(p[rows]) for p, _, _ in layers]
        post = [torch.from_numpy(q[rows]) for _, q, _ in layers]
        whole.update(pre, post)
        parts[(0, 0, 1, 2, 2)[index]].update(pre, post)
    joined = ValueAccumulator.combine([part.state() for part in parts])
    assert joined.samples == whole.samples == 257
    assert joined.result() == whole.result()
    expected, found = whole.state(), joined.state()
    assert expected.keys() == found.keys()
    for key in expected:
        if key.startswith("abs_sum"):  # per-batch sums added up in float64 in another order
            np.testing.assert_allclose(found[key], expected[key], rtol=1e-12)
        else:
            assert np.array_equal(found[key], expected[key]), key
    for layer in range(3):
        neurons = list(range(whole.neurons[layer]))
        assert joined.ranges(layer, neurons) == whole.ranges(layer, neurons)


def test_post_space_ranges_are_the_outputs() -> None:
    pre = torch.tensor([[-1.0, 2.0], [-3.0, 0.5]])
    values = ValueAccumulator([2], [2], post_space=True)
    values.update([pre], [torch.sigmoid(pre)])
    low = values.ranges(0, [0])[0]
    assert (low.pre_min, low.pre_max) == (-3.0, -1.0)
    assert low.space_min == pytest.approx(float(torch.sigmoid(torch.tensor(-3.0))))


def test_an_all_zero_layer_is_all_dormant_and_uncovered() -> None:
    values = ValueAccumulator([3], [3])
    zeros = torch.zeros(4, 3)
    values.update([zeros - 1], [zeros])
    stats = values.result()[0]
    assert stats.dormant_counts == (3, 3, 3) and stats.covered_counts == (0, 0, 0, 0)


def test_region_distance_is_the_gap_to_the_nearer_end() -> None:
    assert region_distance(-3.0, -0.5, 0, [0.0]) == 0.5
    assert region_distance(1.0, 2.0, 1, [0.0, 6.0]) == 1.0
    assert region_distance(5.0, 5.5, 1, [0.0, 6.0]) == 0.5
    assert region_distance(-1.0, 1.0, 1, [0.0]) == 0.0
    assert region_distance(0.0, 0.0, 0, [0.0]) == 0.0
    assert math.isinf(region_distance(-1.0, 1.0, 0, []))


def test_dominant_regions_are_the_most_held() -> None:
    health = HealthAccumulator([3], [3])
    patterns = torch.tensor([[0, 2, 1], [0, 2, 2], [0, 1, 1]], dtype=torch.uint8)
    values = torch.zeros(3, 3)
    health.update([patterns], [values], [values])
    assert health.dominant_regions(0, [0, 1, 2]) == [(0, 1.0), (2, 2 / 3), (1, 2 / 3)]


def test_contract_errors_say_what_was_expected() -> None:
    with pytest.raises(Exception, match="unit count dividing its neuron count"):
        ValueAccumulator([6], [4])
    values = ValueAccumulator([3], [3])
    with pytest.raises(Exception, match=r"expected per layer \[b, M\] float pre and post values"):
        values.update([torch.zeros(2, 4)], [torch.zeros(2, 4)])
    with pytest.raises(Exception, match="at least one sample"):
        values.result()


@pytest.mark.parametrize("post_space", [False, True])
def test_the_torch_path_of_accelerators_agrees_with_the_cpu_path(post_space: bool) -> None:
    layers = _layers(2, 130)
    cpu, fused = _accumulator(layers, post_space=post_space), _accumulator(layers, post_space=post_space)
    for start in range(0, 130, 50):
        rows = slice(start, start + 50)
        cpu.update(
            [torch.from_numpy(p[rows]) for p, _, _ in layers],
            [torch.from_numpy(q[rows]) for _, q, _ in layers],
        )
        for layer, (pre, post, _) in enumerate(layers):
            fused._update_torch(layer, torch.from_numpy(pre[rows]), torch.from_numpy(post[rows]))
        fused.samples += len(layers[0][0][rows])
    assert fused.result() == cpu.result()
    expected, found = cpu.state(), fused.state()
    for key in expected:
        np.testing.assert_allclose(found[key], expected[key], rtol=1e-5, err_msg=key)
