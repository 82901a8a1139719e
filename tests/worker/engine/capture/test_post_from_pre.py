"""Post-activations derived from the captured pre-activation on the CPU (numpy's ``clip``) carry the
same bits as torch's own ReLU and clamp: signed zeros, NaN, infinities and bounds that float32
cannot represent included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.capture.onnx_model import _clamp


def _values(dtype: torch.dtype) -> torch.Tensor:
    """``[4, 64]`` values with every edge case besides random ones, as a non-contiguous view."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 4, generator=generator, dtype=dtype) * 4
    special = torch.tensor([-0.0, 0.0, math.nan, math.inf, -math.inf, 0.1, -1.0, 1.0, 6.0, 2.7], dtype=dtype)
    base.view(-1)[: special.numel()] = special
    return base.T


def _bits(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.contiguous().numpy()
    return array.view(np.int32 if array.dtype == np.float32 else np.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_twin_matches_torch_relu_bit_for_bit(dtype: torch.dtype) -> None:
    pre = _values(dtype)
    derived = _clamp(0.0, math.inf)(pre)
    assert derived.dtype == dtype and derived.shape == pre.shape
    np.testing.assert_array_equal(_bits(derived), _bits(torch.relu(pre)))


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.0, 1.0), (0.1, 2.7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_twin_matches_torch_clamp_bit_for_bit(bounds: tuple[float, float], dtype: torch.dtype) -> None:
    pre = _values(dtype)
    derived = _clamp(*bounds)(pre)
    assert derived.dtype == dtype
    np.testing.assert_array_equal(_bits(derived), _bits(torch.clamp(pre, *bounds)))


def test_other_dtypes_and_autograd_go_through_torch() -> None:
    half = _values(torch.float32).to(torch.float16)
    torch.testing.assert_close(
        _clamp(0.0, 6.0)(half), torch.clamp(half, 0.0, 6.0), rtol=0.0, atol=0.0, equal_nan=True
    )
    tracked = _values(torch.float32).requires_grad_(True)
    derived = _clamp(0.0, math.inf)(tracked)
    assert derived.requires_grad
    torch.testing.assert_close(
        derived.detach(), torch.relu(tracked.detach()), rtol=0.0, atol=0.0, equal_nan=True
    )
