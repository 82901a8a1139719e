"""Single-threaded numpy stand-ins for torch calls on CPU tensors. Torch's threaded kernels contend
with a runtime's worker threads (ONNX Runtime's spin after each run): a reduction over a
``[16, 200704]`` layer of mobilenet_v2 took 60 ms in torch against 1 ms in numpy."""

from __future__ import annotations

import numpy as np
import torch


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros(shape, dtype=dtype, device=device)``, filled by numpy on the CPU."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


def max_index(regions: torch.Tensor) -> int:
    """The largest entry of a non-empty integer tensor (any shape), by numpy on the CPU."""
    if regions.device.type == "cpu":
        return int(regions.numpy().max())
    return int(regions.max())


def full(size: int, value: float, device: torch.device) -> torch.Tensor:
    """``torch.full((size,), value, device=device)`` (float32), filled by numpy on the CPU."""
    if device.type != "cpu":
        return torch.full((size,), value, dtype=torch.float32, device=device)
    return torch.from_numpy(np.full(size, value, dtype=np.float32))


#: Rows of zeros and ones whose column sums still fit a uint8.
_UINT8_ROWS = 255


def column_counts(flags: np.ndarray) -> np.ndarray:
    """``[M]`` column sums of ``[b, M]`` zeros and ones (bool or uint8), exact: accumulated in
    uint8 (no widening pass) over blocks of 255 rows; uint8 for ``b <= 255``, else int64."""
    ones = flags.view(np.uint8) if flags.dtype == np.bool_ else flags
    if ones.shape[0] <= _UINT8_ROWS:
        counted: np.ndarray = np.add.reduce(ones, axis=0, dtype=np.uint8)
        return counted
    total = np.zeros(ones.shape[1], dtype=np.int64)
    for start in range(0, ones.shape[0], _UINT8_ROWS):
        total += np.add.reduce(ones[start : start + _UINT8_ROWS], axis=0, dtype=np.uint8)
    return total
