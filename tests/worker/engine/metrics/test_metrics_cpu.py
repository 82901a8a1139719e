"""The numpy stand-ins for torch's allocations and reductions give what torch gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.metrics._cpu import column_counts, full, max_index, zeros


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float64])
def test_zeros_is_torch_zeros(dtype: torch.dtype) -> None:
    made = zeros((3, 5), dtype, torch.device("cpu"))
    assert made.dtype == dtype and made.device.type == "cpu"
    assert torch.equal(made, torch.zeros(3, 5, dtype=dtype))
    made += 1
    assert int(made.sum()) == 15


@pytest.mark.parametrize("value", [math.inf, -math.inf, 0.5])
def test_full_is_a_float32_torch_full(value: float) -> None:
    made = full(7, value, torch.device("cpu"))
    assert made.dtype == torch.float32
    assert torch.equal(made, torch.full((7,), value, dtype=torch.float32))


def test_max_index_of_strided_and_contiguous_tensors() -> None:
    generator = torch.Generator().manual_seed(1)
    regions = torch.randint(0, 5, (6, 40), generator=generator, dtype=torch.uint8)
    assert max_index(regions) == int(regions.max())
    view = regions[:, ::3].T
    assert max_index(view) == int(view.max())


@pytest.mark.parametrize("rows", [1, 16, 255, 256, 600])
def test_column_counts_are_exact_column_sums(rows: int) -> None:
    generator = np.random.default_rng(rows)
    flags = generator.random((rows, 33)) < 0.9
    expected = flags.sum(0, dtype=np.int64)
    for given in (flags, flags.view(np.uint8), flags[:, ::2]):
        counted = column_counts(given)
        assert np.array_equal(counted.astype(np.int64), given.view(np.uint8).sum(0, dtype=np.int64))
    assert np.array_equal(column_counts(flags).astype(np.int64), expected)
