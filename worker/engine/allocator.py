"""glibc ``malloc`` settings for a process that runs analyses.

A capture hands back every activation layer's pre- and post-activations for a batch: tens of MiB
per batch for a conv net, freed when the batch is done. By default glibc serves each block above
its (adaptive) mmap threshold with a fresh ``mmap``, so every batch page-faults those MiB in and
``munmap``s them again. Measured on the VGG benchmark net (batch 64, 2-core CPU): about 8,000
minor faults and 10–20 ms of kernel time per batch, 10–15 % of the batch. Serving blocks up to
32 MiB from the heap and keeping freed heap memory makes later batches reuse pages already
mapped: 0 faults per batch, peak RSS about 50 MiB higher.

The setting is process-wide, so it is made by the processes that run analyses (the worker's
analysis child and ``neuronscope analyze``), not by the engine on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: ``mallopt`` parameters from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit (half its 64 MiB heap size).
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Freed heap memory above this is given back to the system; this keeps it (2 GiB - 1, an int).
TRIM_THRESHOLD = 2**31 - 1


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> bool:
    """Give the free memory malloc keeps back to the system (``malloc_trim(0)``), so that resident
    memory measured next counts only what is in use. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.malloc_trim(0)
    return True


def keep_freed_memory() -> bool:
    """Ask glibc ``malloc`` to serve blocks up to 32 MiB from the heap and to keep freed heap
    memory. True when both settings took; False where the C library is not glibc (musl, macOS,
    Windows) or refused them, and then nothing changed."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    served = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    return bool(served) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
