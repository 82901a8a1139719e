"""Section 8: the warm launcher against the standard library's: ``worker.child.zygote`` and
``multiprocessing``'s forkserver with the same modules preloaded.

Each round starts one analysis-sized child per launcher that imports nothing new and exits:
from the request to the exit status, which is what a job pays to get a process that has torch,
onnxruntime and the engine imported. Both launchers are started and warmed before timing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import compare
from worker.child.environment import launcher_env
from worker.child.zygote import PRELOAD, Zygote


def _zygote_child(zygote: Zygote, workdir: Path) -> None:
    with open(os.devnull, "wb") as sink:
        child = zygote.spawn(
            ["-c", "pass"], cwd=workdir, env=launcher_env(1), stdout=sink.fileno(), stderr=sink.fileno()
        )
    if child.wait(timeout=60) != 0:
        raise RuntimeError(f"the zygote's child exited with {child.returncode}")


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Without this the forkserver's child imports this process's ``__main__`` again (the whole
    benchmark suite, ~0.7 s); a launcher built on it would hide its ``__main__`` the same way."""
    main = sys.modules["__main__"]
    spec = main.__dict__.get("__spec__")
    path: Any = main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def _forkserver_child(context: multiprocessing.context.ForkServerContext) -> None:
    process = context.Process(target=os.getpid)  # a builtin: the child imports nothing to find it
    with _main_module_hidden():
        process.start()
    process.join(timeout=60)
    if process.exitcode != 0:
        raise RuntimeError(f"the forkserver's child exited with {process.exitcode}")


def run(ctx: Context) -> list[Row]:
    workdir = ctx.scratch / "launcher"
    workdir.mkdir(exist_ok=True)
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(list(PRELOAD))
    zygote = Zygote(launcher_env(1))
    try:
        zygote.start()
        timings = compare(
            {
                "zygote": lambda: _zygote_child(zygote, workdir),
                "forkserver": lambda: _forkserver_child(forkserver),
            },
            repeats=ctx.sizes.repeats,
            warmup=ctx.sizes.warmup,
        )
    finally:
        zygote.close()
    return [
        Row(
            "8",
            "warm launcher: multiprocessing forkserver (same preload) ÷ worker.child.zygote, request to exit",
            timings.ratio("forkserver", "zygote"),
            f"{fmt_seconds(timings.median('forkserver'))} vs {fmt_seconds(timings.median('zygote'))}",
            note="above 1: the zygote is faster",
        )
    ]
