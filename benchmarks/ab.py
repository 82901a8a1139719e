"""Before / after: the same measurements of section 9 on two source trees, side by side.

    git archive <base commit> | tar -x -C /tmp/base
    .venv/bin/python -m benchmarks.ab --before /tmp/base [--after .] [--models mobilenet_v2,resnet18]

The models are exported once; every round then starts one fresh process per tree (order rotating),
which imports that tree's engine and times ``open_model`` (its first load in the process), plain
inference, ``capture`` and the whole engine pass (``capture_dataset``) on batch 16. Printed: per
model, format and measure, the median over rounds of after ÷ before (below 1: faster), with the
medians of both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.architectures import FORMATS, PRESETS, build, export

MEASURES = ("load", "infer", "capture", "engine")

CHILD = r"""
import json, statistics, sys, time
import numpy as np
from neuronscope.contracts.config import AnalysisConfig
from worker.engine.allocator import keep_freed_memory
from worker.engine.analysis import capture_dataset, plan_layers
from worker.engine.capture.loader import open_model
from worker.engine.inputs import BoundInputs

keep_freed_memory()
path, inputs, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
feed = dict(np.load(inputs))
example = {k: v[:2] for k, v in feed.items()}
start = time.perf_counter()
model = open_model(__import__("pathlib").Path(path), device="cpu", example=example)
load = time.perf_counter() - start

def timed(fn):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

size = next(iter(feed.values())).shape[0]
data = BoundInputs(arrays={k: np.concatenate([v] * 2) for k, v in feed.items()}, samples=2 * size)
config = AnalysisConfig.model_validate({"batch_size": size, "device": "cpu", "transition_density": None})
plans = plan_layers(model, config)
if repeats == 0:
    print(json.dumps({"load": load}))
    sys.exit(0)
print(json.dumps({
    "load": load,
    "infer": timed(lambda: model.infer(feed)),
    "capture": timed(lambda: model.capture(feed)),
    "engine": timed(lambda: capture_dataset(model, data, plans, config, lambda stage, fraction: None)) / 2,
}))
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the baseline")
    parser.add_argument("--after", type=Path, default=Path.cwd(), help="source tree measured against it")
    parser.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0,densenet121")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measure in each process")
    parser.add_argument("--load-only", action="store_true", help="time open_model alone (no runs after it)")
    return parser.parse_args(argv)


def _child(tree: Path, model: Path, inputs: Path, repeats: int) -> dict[str, float]:
    """One fresh process on ``tree``'s code; ``repeats`` 0: the load alone."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(inputs), str(repeats)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {model.name} failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trees = {"before": args.before, "after": args.after}
    lines = ["| model | format | measure | after / before | before | after |", "|---|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="neuronscope-ab-") as scratch:
        directory = Path(scratch)
        for label in args.models.split(","):
            built = build(label, PRESETS["full"])
            if built.module is None:
                lines.append(f"| {label} | — | not installed ({built.missing}) | — | — | — |")
                continue
            inputs = directory / f"{label}.npz"
            np.savez(inputs, allow_pickle=False, **built.feed)
            for fmt in args.formats.split(","):
                path = export(built, fmt, directory)
                rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
                for index in range(args.rounds):
                    order = list(trees) if index % 2 == 0 else list(reversed(trees))
                    for name in order:
                        rounds[name].append(
                            _child(trees[name], path, inputs, 0 if args.load_only else args.repeats)
                        )
                for measure in ("load",) if args.load_only else MEASURES:
                    before = [r[measure] for r in rounds["before"]]
                    after = [r[measure] for r in rounds["after"]]
                    ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
                    was, now = statistics.median(before) * 1e3, statistics.median(after) * 1e3
                    row = f"| {label} | {fmt} | {measure} | {ratio:.2f}× | {was:,.0f} ms | {now:,.0f} ms |"
                    lines.append(row)
                print(lines[-1 if args.load_only else -4 :], file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
