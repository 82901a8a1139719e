"""``keep_freed_memory``: after it, batches of large blocks stop page-faulting fresh memory."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys

import pytest

#: Four 20 MiB blocks written and freed together, ten times (what a capture does per batch);
#: prints the minor page faults of the last nine rounds.
ROUNDS = """
import json, resource, sys
from worker.engine.allocator import keep_freed_memory, release_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024
def round_():
    blocks = [bytearray(20 * 2**20) for _ in range(4)]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
kept = rss_mib()
released = release_freed_memory()
print(json.dumps({"tuned": tuned, "faults": faults, "kept": kept, "released": released, "after": rss_mib()}))
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt settings are glibc's",
)


@functools.cache
def _rounds(mode: str) -> str:
    """The rounds' output in a fresh process, once per mode for the session (each start imports
    the engine: seconds); every test parses its own copy."""
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def _faults(mode: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(_rounds(mode))
    return result


@glibc_only
def test_settings_take_on_glibc() -> None:
    assert _faults("tuned")["tuned"] is True


@glibc_only
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    pages_per_round = 4 * 20 * 2**20 // 4096
    assert isinstance(default["faults"], int) and isinstance(tuned["faults"], int)
    assert default["faults"] >= 9 * pages_per_round // 2, default
    assert tuned["faults"] < pages_per_round // 10, tuned


@glibc_only
def test_release_gives_kept_memory_back() -> None:
    tuned = _faults("tuned")
    assert tuned["released"] is True
    assert isinstance(tuned["kept"], int) and isinstance(tuned["after"], int)
    assert tuned["kept"] - tuned["after"] >= 60, tuned
