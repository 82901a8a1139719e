"""Section 7: what confinement adds to starting an analysis process.

Each round forks two children from a warm zygote, as the worker does for every job: one that only
starts and exits, one that confines itself (Landlock, seccomp, network namespace, capabilities:
:func:`neuronscope.confinement.confine`) and exits. The difference is the per-job start-up cost
of confinement; the host probe (a confined throw-away child, once per worker and API process) is
timed on its own.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from benchmarks.context import Context
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import compare
from neuronscope.confinement import landlock_abi, probe
from worker.child.environment import launcher_env
from worker.child.zygote import Zygote

_PLAIN = "pass"
_CONFINED = (
    "from pathlib import Path\nfrom neuronscope.confinement import confine, default_paths\n"
    "confine(default_paths([Path.cwd()]))\n"
)


def _launch(zygote: Zygote, code: str, workdir: Path) -> None:
    with open(os.devnull, "wb") as sink:
        child = zygote.spawn(
            ["-c", code], cwd=workdir, env=launcher_env(1), stdout=sink.fileno(), stderr=sink.fileno()
        )
    if child.wait(timeout=60) != 0:
        raise RuntimeError(f"the benchmark child exited with {child.returncode}")


def run(ctx: Context) -> list[Row]:
    if not landlock_abi():
        return [Row("7", "confinement: this kernel has no Landlock", None, "not measured")]
    workdir = ctx.scratch / "confinement"
    workdir.mkdir(exist_ok=True)
    zygote = Zygote(launcher_env(1))
    try:
        zygote.start()
        timings = compare(
            {
                "plain": lambda: _launch(zygote, _PLAIN, workdir),
                "confined": lambda: _launch(zygote, _CONFINED, workdir),
            },
            repeats=ctx.sizes.repeats,
            warmup=ctx.sizes.warmup,
        )
    finally:
        zygote.close()
    probes = []
    for _ in range(min(5, ctx.sizes.repeats)):
        start = time.perf_counter()
        probe()
        probes.append(time.perf_counter() - start)
    added = statistics.median(
        c - p for c, p in zip(timings.rounds["confined"], timings.rounds["plain"], strict=True)
    )
    return [
        Row(
            "7",
            "confinement: analysis process fork-to-exit from the warm zygote, confined ÷ plain",
            timings.ratio("confined", "plain"),
            f"{fmt_seconds(timings.median('confined'))} vs {fmt_seconds(timings.median('plain'))}; "
            f"added per job {fmt_seconds(added)}",
        ),
        Row(
            "7",
            "confinement: host probe (a confined child started and checked; once per process)",
            None,
            fmt_seconds(statistics.median(probes)),
        ),
    ]
