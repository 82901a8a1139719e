"""Dataset arrays checked against the dtype a model declares for each input, the same way for
every format: integer inputs (token ids) take integer data, or float data holding whole numbers
(cast exactly); anything else is refused with the input named, before the model runs."""

from __future__ import annotations

import numpy as np

from worker.engine.capture.base import InputSpec
from worker.engine.errors import AnalysisError


def _integer(dtype: str) -> np.dtype | None:
    """The numpy integer dtype of a declared input dtype (``"int64"``), None for any other."""
    try:
        found = np.dtype(dtype)
    except TypeError:
        return None
    return found if np.issubdtype(found, np.integer) else None


def as_declared(name: str, array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``array`` ``[N, ...]`` for model input ``spec``: cast to an integer input's dtype when its
    float values are all whole numbers within that dtype's range, else unchanged.

    >>> as_declared("ids", np.array([[1.0, 2.0]]), InputSpec("ids", (None, 2), "int64")).dtype
    dtype('int64')

    Raises ``AnalysisError(code="dataset_invalid")`` for float data that is not whole numbers (or
    not finite), or bool / complex / string data for an integer input.
    """
    target = _integer(spec.dtype)
    if target is None or np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise AnalysisError(
            f"input {name!r}: the model takes {spec.dtype} values (token ids or indices), "
            f"got {array.dtype} data",
            code="dataset_invalid",
        )
    info = np.iinfo(target)
    whole = np.isfinite(array) & (np.floor(array) == array) & (array >= info.min) & (array <= info.max)
    if not bool(whole.all()):
        bad = array[~whole].reshape(-1)[0]
        raise AnalysisError(
            f"input {name!r}: the model takes {spec.dtype} values (token ids or indices), got {array.dtype} "
            f"data with values that are not whole numbers in its range (e.g. {bad!r}); "
            "store the ids as integers",
            code="dataset_invalid",
        )
    return array.astype(target)
