"""Spearman rank correlation against scipy, and where it is undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.errors import AnalysisError
from worker.engine.metrics import average_ranks, spearman

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=50)
    y = x + rng.integers(-3, 4, size=50)
    z = rng.normal(size=50)
    for a, b in ((x, y), (x.astype(np.float64), z), (z, z**3 + rng.normal(size=50))):
        expected = stats.spearmanr(a, b).statistic
        assert spearman(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, abs=1e-12)


def test_ranks_match_scipy_average_ranks() -> None:
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, -1.0, 1.0])
    np.testing.assert_array_equal(average_ranks(torch.from_numpy(values)).numpy(), stats.rankdata(values))


def test_is_invariant_under_monotone_maps_and_bounded() -> None:
    rng = np.random.default_rng(9)
    x, y = torch.from_numpy(rng.normal(size=30)), torch.from_numpy(rng.normal(size=30))
    assert spearman(x, y) == pytest.approx(spearman(x.exp(), y**3), abs=1e-12)
    assert spearman(x, x) == 1.0 and spearman(x, -x) == -1.0


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (torch.tensor([1.0]), torch.tensor([2.0])),
        (torch.tensor([]), torch.tensor([])),
        (torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])),
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5, 5, 5])),
        (torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([1.0, 2.0, 3.0])),
    ],
)
def test_undefined_is_nan(x: torch.Tensor, y: torch.Tensor) -> None:
    assert math.isnan(spearman(x, y))


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(AnalysisError, match=r"got shape \[3\] float32 and shape \[2\] float32"):
        spearman(torch.zeros(3), torch.zeros(2))
