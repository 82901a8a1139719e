"""Peak resident memory of one call, in this process: Linux resets the high-water mark (VmHWM) when
``5`` is written to ``/proc/self/clear_refs``; without that, the process peak so far is used."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from worker.engine.allocator import release_freed_memory

T = TypeVar("T")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Peak:
    """Resident bytes before the call and at the peak during it (``exact``: the high-water mark was
    reset first, so the peak belongs to the call alone; else it is the process peak, which on Linux
    also counts the parent's peak from before ``execve``)."""

    before: int
    peak: int
    exact: bool

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.before)


def peak_during(fn: Callable[[], T]) -> tuple[T, Peak]:
    """Run ``fn`` and measure the resident memory it took at its peak. Free memory malloc keeps
    (``keep_freed_memory``) is given back first, or ``fn`` would reuse it unseen."""
    release_freed_memory()
    before = (_status_kib("VmRSS") or 0) * 1024
    exact = _reset_peak()
    result = fn()
    hwm = _status_kib("VmHWM")
    if hwm is not None and exact:
        return result, Peak(before, hwm * 1024, True)
    return result, Peak(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False)
