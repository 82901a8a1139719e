"""Checks that a batch fits a model's inputs, shared by both front ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from worker.engine.capture.base import InputSpec
from worker.engine.errors import AnalysisError

Array = np.ndarray | torch.Tensor
Batch = Mapping[str, Array]


def _fmt(shape: Sequence[object]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def batch_size(batch: Batch, inputs: Sequence[InputSpec]) -> int:
    """The common leading dimension ``B`` of ``batch[name]`` for every model input.

    Keys that are not model inputs (labels, ids) are ignored. Raises
    ``AnalysisError(code="dataset_shape_mismatch")`` when an input is missing, is a scalar or when
    the inputs disagree on ``B``.
    """
    names = [spec.name for spec in inputs]
    missing = [name for name in names if name not in batch]
    if missing:
        raise AnalysisError(
            f"expected arrays for the model inputs {names}, got keys {sorted(batch)} (missing {missing})",
            code="dataset_shape_mismatch",
        )
    sizes: dict[str, int] = {}
    for name in names:
        shape = tuple(batch[name].shape)
        if not shape:
            raise AnalysisError(
                f"input {name!r}: expected an array [B, ...] with a batch dimension, got a scalar",
                code="dataset_shape_mismatch",
            )
        sizes[name] = int(shape[0])
    if len(set(sizes.values())) > 1:
        raise AnalysisError(
            f"expected every model input to hold the same number of samples, got {sizes}",
            code="dataset_shape_mismatch",
        )
    size = next(iter(sizes.values()))
    if size == 0:
        raise AnalysisError("expected at least one sample in the batch, got 0", code="dataset_shape_mismatch")
    return size


def check_declared_shapes(batch: Batch, inputs: Sequence[InputSpec]) -> None:
    """Compare each input's per-sample shape with the model's declared shape.

    An empty ``spec.shape`` means the rank is unknown and is not checked; string or ``None``
    dimensions accept any size; the batch dimension is never compared (fixed-batch models run in
    chunks).
    """
    for spec in inputs:
        if not spec.shape:
            continue
        actual = tuple(int(d) for d in batch[spec.name].shape)
        expected = spec.shape
        fits = len(actual) == len(expected) and all(
            not isinstance(e, int) or e == a for e, a in zip(expected[1:], actual[1:], strict=True)
        )
        if not fits:
            raise AnalysisError(
                f"input {spec.name!r}: expected shape {_fmt(('N', *expected[1:]))} "
                f"(model declares {_fmt(expected)}), got {_fmt(actual)}",
                code="dataset_shape_mismatch",
            )


def check_sample_shapes(batch: Batch, sample_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every batch must have the per-sample shapes of the example the layers were discovered with."""
    for name, expected in sample_shapes.items():
        actual = tuple(int(d) for d in batch[name].shape[1:])
        if actual != expected:
            raise AnalysisError(
                f"input {name!r}: expected shape {_fmt((None, *expected))} like the example batch, "
                f"got {_fmt(tuple(batch[name].shape))}",
                code="dataset_shape_mismatch",
            )


def doubled(batch: Batch, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Each input's ``[B, ...]`` array followed by itself: ``[2B, ...]``.

    Discovery runs this too, so that values whose leading dimension merely happens to equal B
    (activations of weights) can be told from per-sample ones.
    """
    return {spec.name: np.concatenate([as_numpy(batch[spec.name])] * 2, axis=0) for spec in inputs}


def as_numpy(value: Array, dtype: np.dtype | None = None) -> np.ndarray:
    """``value`` as a contiguous numpy array on the host, cast to ``dtype`` when given."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def as_tensor(value: Array, device: torch.device, float_dtype: torch.dtype) -> torch.Tensor:
    """``value`` as a torch tensor on ``device``; floating values are cast to ``float_dtype``."""
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    if tensor.is_floating_point() and tensor.dtype != float_dtype:
        tensor = tensor.to(float_dtype)
    return tensor.to(device, non_blocking=True)
