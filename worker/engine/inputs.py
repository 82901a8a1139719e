"""Bind a dataset's arrays to a model's named inputs and cut them into batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from worker.engine.capture.base import InputSpec
from worker.engine.errors import AnalysisError
from worker.engine.input_dtypes import as_declared


@dataclass(frozen=True)
class BoundInputs:
    """The dataset's inputs keyed by model input name; every array is ``[N, ...]``."""

    arrays: dict[str, np.ndarray]
    samples: int

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: array[start:stop] for name, array in self.arrays.items()}

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        for start in range(0, self.samples, batch_size):
            stop = min(start + batch_size, self.samples)
            yield start, stop, self.batch(start, stop)

    def rows(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` of every input, keeping the batch axis: ``[1, ...]`` each."""
        return self.batch(index, index + 1)


def bind_inputs(arrays: Mapping[str, np.ndarray], model_inputs: list[InputSpec]) -> BoundInputs:
    """Map dataset keys to model inputs: ``x`` for a single-input model, else input names; float
    data for an integer input is cast when it holds whole numbers, else refused
    (``worker.engine.input_dtypes``).

    >>> spec = [InputSpec("input", ("batch", 4), "float32")]
    >>> bound = bind_inputs({"x": np.zeros((3, 4), np.float32)}, spec)
    >>> list(bound.arrays), bound.samples
    (['input'], 3)
    """
    names = [spec.name for spec in model_inputs]
    if not names:
        raise AnalysisError("expected a model with at least one input, got none", code="model_invalid")
    if len(names) == 1 and names[0] not in arrays:
        if "x" not in arrays:
            raise AnalysisError(
                f"expected the dataset to hold 'x' or {names[0]!r}, got keys {sorted(arrays)}",
                code="dataset_missing_key",
            )
        bound = {names[0]: arrays["x"]}
    else:
        missing = [name for name in names if name not in arrays]
        if missing:
            raise AnalysisError(
                f"expected the dataset to hold one array per model input {names}, missing {missing}; "
                f"got keys {sorted(arrays)}",
                code="dataset_missing_key",
            )
        bound = {name: arrays[name] for name in names}
    counts = {name: int(array.shape[0]) if array.ndim else 0 for name, array in bound.items()}
    if len(set(counts.values())) != 1:
        raise AnalysisError(
            f"expected every input to hold the same number of samples, got {counts}", code="dataset_invalid"
        )
    specs = {spec.name: spec for spec in model_inputs}
    bound = {name: as_declared(name, array, specs[name]) for name, array in bound.items()}
    samples = next(iter(counts.values()))
    if samples < 2:
        raise AnalysisError(
            f"expected at least 2 samples to form pairs, got {samples}", code="dataset_invalid"
        )
    return BoundInputs(arrays=bound, samples=samples)
