"""Side-by-side timing: every contender runs in the same process, interleaved round by round (the
order rotating each round), so machine noise hits all of them alike; figures are medians."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    """Seconds per call of each contender, one entry per round."""

    rounds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of ``name``'s time / ``baseline``'s time in the same round."""
        pairs = zip(self.rounds[name], self.rounds[baseline], strict=True)
        return statistics.median(a / b for a, b in pairs)


def compare(contenders: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = 2) -> Timings:
    """Time each callable ``repeats`` times after ``warmup`` untimed calls, interleaved; the
    cyclic garbage collector is paused while a call is timed and runs between calls."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    rounds: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(_timed(contenders[name]))
    return Timings(rounds)


def _timed(fn: Callable[[], object]) -> float:
    """Seconds of one call with the cyclic garbage collector paused (as ``timeit`` does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
