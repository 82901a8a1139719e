"""Layer health against brute-force per-neuron counts, with planted dead and dying neurons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.errors import AnalysisError
from worker.engine.metrics import HealthAccumulator, LayerHealthStats

SAMPLES = 40


def _layer(width: int, regions: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region indices with planted dead (constant) and dying (90 %) neurons, plus pre/post values."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, regions, size=(SAMPLES, width), dtype=np.uint8)
    patterns[:, 1] = regions - 1
    patterns[:, 4] = 0
    patterns[:, 6] = 1
    patterns[: SAMPLES // 10, 6] = 0
    patterns[:, 8] = 0
    patterns[: SAMPLES // 10 + 1, 8] = 1
    pre = rng.normal(size=(SAMPLES, width)).astype(np.float32) * 3 + 1
    return patterns, pre, np.maximum(pre, 0)


def _reference(
    patterns: np.ndarray, pre: np.ndarray, post: np.ndarray, regions: int, threshold: float
) -> LayerHealthStats:
    dead, dying = [], []
    for m in range(patterns.shape[1]):
        counts = [int(np.sum(patterns[:, m] == r)) for r in range(regions)]
        if max(counts) == SAMPLES:
            dead.append(m)
        if max(counts) / SAMPLES >= threshold:
            dying.append(m)
    occupancy = [float(np.mean(patterns == r)) for r in range(regions)]
    return LayerHealthStats(
        samples=SAMPLES,
        neurons=patterns.shape[1],
        dead_count=len(dead),
        dying_count=len(dying),
        dead_neurons=dead,
        dying_neurons=dying,
        region_occupancy=occupancy,
        pre_activation_mean=float(pre.astype(np.float64).mean()),
        pre_activation_var=float(pre.astype(np.float64).var()),
        post_activation_mean=float(post.astype(np.float64).mean()),
        post_activation_var=float(post.astype(np.float64).var()),
    )


def _accumulate(
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]], regions: list[int], batch: int
) -> HealthAccumulator:
    health = HealthAccumulator([p.shape[1] for p, _, _ in layers], regions)
    for start in range(0, SAMPLES, batch):
        rows = slice(start, start + batch)
        health.update(
            [torch.from_numpy(p[rows]) for p, _, _ in layers],
            pre=[torch.from_numpy(v[rows]) for _, v, _ in layers],
            post=[torch.from_numpy(v[rows]) for _, _, v in layers],
        )
    return health


def _assert_stats(got: LayerHealthStats, expected: LayerHealthStats) -> None:
    exact = ("samples", "neurons", "dead_count", "dying_count", "dead_neurons", "dying_neurons")
    assert [getattr(got, f) for f in exact] == [getattr(expected, f) for f in exact]
    assert got.region_occupancy == pytest.approx(expected.region_occupancy, rel=1e-12)
    for field in ("pre_activation_mean", "pre_activation_var", "post_activation_mean", "post_activation_var"):
        assert getattr(got, field) == pytest.approx(getattr(expected, field), rel=1e-12), field


@pytest.mark.parametrize("batch", [1, 7, 16, 40])
def test_health_matches_brute_force_for_any_batch_size(batch: int) -> None:
    regions = [2, 4, 20]
    layers = [_layer(11, r, seed) for seed, r in enumerate(regions)]
    results = _accumulate(layers, regions, batch).result(dying_threshold=0.9, max_indices=100)
    for got, (patterns, pre, post), r in zip(results, layers, regions, strict=True):
        _assert_stats(got, _reference(patterns, pre, post, r, 0.9))


def test_planted_dead_and_dying_neurons_are_found_exactly() -> None:
    layer = _layer(11, 2, seed=5)
    got = _accumulate([layer], [2], 8).result(dying_threshold=0.9, max_indices=100)[0]
    assert got.dead_neurons == [1, 4]
    assert 6 in got.dying_neurons and 8 not in got.dying_neurons
    assert set(got.dead_neurons) <= set(got.dying_neurons)
    assert got.dead_fraction == 2 / 11 and got.dying_fraction == got.dying_count / 11


def test_threshold_is_inclusive_and_exact() -> None:
    health = HealthAccumulator([2], [2])
    column = torch.tensor([0] * 9 + [1], dtype=torch.uint8)
    patterns = torch.stack([column, 1 - column], dim=1)
    health.update([patterns], pre=[patterns.float()], post=[patterns.float()])
    assert health.result(0.9, 10)[0].dying_neurons == [0, 1]
    assert health.result(0.91, 10)[0].dying_neurons == []
    assert health.result(1.0, 10)[0].dying_neurons == []


def test_permuting_neurons_permutes_the_indices() -> None:
    patterns, pre, post = _layer(11, 4, seed=6)
    order = np.random.default_rng(0).permutation(11)
    plain = _accumulate([(patterns, pre, post)], [4], 9).result(0.8, 100)[0]
    moved = _accumulate([(patterns[:, order], pre[:, order], post[:, order])], [4], 9).result(0.8, 100)[0]
    assert sorted(order[moved.dead_neurons].tolist()) == plain.dead_neurons
    assert sorted(order[moved.dying_neurons].tolist()) == plain.dying_neurons
    assert moved.region_occupancy == plain.region_occupancy
    assert moved.pre_activation_var == pytest.approx(plain.pre_activation_var, rel=1e-12)


def test_index_lists_are_capped_but_counts_are_not() -> None:
    got = _accumulate([_layer(11, 2, seed=7)], [2], 40).result(0.9, max_indices=1)[0]
    assert got.dead_neurons == [1] and got.dead_count == 2
    assert len(got.dying_neurons) == 1


def test_moments_are_float64_accurate_for_large_offsets() -> None:
    values = torch.full((64, 1000), 1e4, dtype=torch.float32) + torch.arange(1000, dtype=torch.float32) % 2
    health = HealthAccumulator([1000], [2])
    for piece in torch.split(values, 5):
        health.update([torch.zeros(piece.shape, dtype=torch.uint8)], pre=[piece], post=[piece])
    got = health.result(0.5, 0)[0]
    assert got.pre_activation_mean == 10000.5 and got.pre_activation_var == 0.25


def test_nan_values_make_moments_nan() -> None:
    health = HealthAccumulator([2], [2])
    values = torch.tensor([[1.0, float("nan")]])
    health.update([torch.zeros(1, 2, dtype=torch.uint8)], pre=[values], post=[values])
    assert math.isnan(health.result(0.5, 0)[0].pre_activation_mean)


def test_misuse_is_refused() -> None:
    health = HealthAccumulator([3], [2])
    with pytest.raises(AnalysisError, match="at least one sample"):
        health.result(0.9, 10)
    with pytest.raises(AnalysisError, match="shaped like its patterns"):
        health.update(
            [torch.zeros(2, 3, dtype=torch.uint8)], pre=[torch.zeros(2, 4)], post=[torch.zeros(2, 3)]
        )
    health.update([torch.zeros(2, 3, dtype=torch.uint8)], pre=[torch.zeros(2, 3)], post=[torch.zeros(2, 3)])
    with pytest.raises(AnalysisError, match=r"dying_threshold=0\.0"):
        health.result(0.0, 10)


def _exact_moments(values: np.ndarray) -> tuple[float, float]:
    """Population mean and variance of float64 ``values`` with correctly rounded sums (fsum)."""
    mean = math.fsum(values.tolist()) / values.size
    return mean, math.fsum(((values - mean) ** 2).tolist()) / values.size


def test_moments_of_large_batches_match_exact_sums_and_join_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 70_001, generator=generator) * 3 + 1 for _ in range(3)]
    health = HealthAccumulator([70_001], [2])
    for values in batches:
        health.update([(values > 0).to(torch.uint8)], [values], [values.relu()])
    stats = health.result(0.9, 0)[0]
    every = torch.cat(batches).double().numpy().reshape(-1)
    pre_mean, pre_var = _exact_moments(every)
    post_mean, post_var = _exact_moments(np.maximum(every, 0.0))
    assert stats.pre_activation_mean == pytest.approx(pre_mean, rel=1e-12)
    assert stats.pre_activation_var == pytest.approx(pre_var, rel=1e-12)
    assert stats.post_activation_mean == pytest.approx(post_mean, rel=1e-12)
    assert stats.post_activation_var == pytest.approx(post_var, rel=1e-12)
    parts = [HealthAccumulator([70_001], [2]) for _ in batches]
    for part, values in zip(parts, batches, strict=True):
        part.update([(values > 0).to(torch.uint8)], [values], [values.relu()])
    joined = HealthAccumulator.combine([70_001], [2], [p.state() for p in parts]).result(0.9, 0)[0]
    assert joined == stats
