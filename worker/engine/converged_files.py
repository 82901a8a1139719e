"""A TD block's converged counts in its stage file, and the blocks' counts joined for the merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.engine.metrics.transition_limit import LimitResult
from worker.engine.stage_files import array, internal

_LIMIT_ARRAYS = ("td", "neuron_changes", "unresolved", "exact_steps", "bisected_steps", "points")


def save_limit(limit: LimitResult) -> dict[str, np.ndarray]:
    """The arrays of a TD block's stage file that hold its converged counts (``limit_*`` keys)."""
    arrays = {f"limit_{name}": getattr(limit, name) for name in _LIMIT_ARRAYS}
    arrays["limit_complete"] = limit.complete
    arrays["limit_exact"] = np.array([limit.exact])
    arrays["limit_passes"] = np.array([limit.passes], dtype=np.int64)
    return arrays


def load_limit(data: Any, pairs: int, name: str) -> LimitResult:
    """The converged counts of ``pairs`` paths saved by :func:`save_limit` in stage file ``name``."""
    found = {key: array(data, f"limit_{key}", np.int64, 1) for key in _LIMIT_ARRAYS}
    complete = array(data, "limit_complete", np.bool_, 1)
    if any(values.shape != (pairs,) for values in [*found.values(), complete]):
        raise internal(f"{name}: expected {pairs} converged TD values per array")
    exact = bool(array(data, "limit_exact", np.bool_, 1)[0])
    passes = int(array(data, "limit_passes", np.int64, 1)[0])
    return LimitResult(**found, complete=complete, exact=exact, passes=passes)


def join_limits(parts: Sequence[LimitResult]) -> LimitResult:
    """The converged counts of consecutive blocks of paths as one."""
    joined = {key: np.concatenate([getattr(part, key) for part in parts]) for key in _LIMIT_ARRAYS}
    return LimitResult(
        **joined,
        complete=np.concatenate([part.complete for part in parts]),
        exact=all(part.exact for part in parts),
        passes=sum(part.passes for part in parts),
    )
