"""What the value accumulators behind every kind of neuron death (``worker.engine.metrics.death``)
add to the engine capture pass: the pass on the benchmark FCNN (784 → 9×256 → 10, batch 256,
1,024 samples) with them and with ``ValueAccumulator.update`` swapped for a no-op (the pass as it
was before them), interleaved in one process, against plain inference.

Run: ``.venv/bin/python -m benchmarks.death_cost [--repeats N] [onnx] [torchscript]``. Prints the
median ratios over rounds and the ratio of the fastest rounds (steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.context import bound, config_for, infer_all
from benchmarks.models import FORMATS, Network, build
from benchmarks.sizes import FULL
from benchmarks.timing import compare
from worker.engine import analysis
from worker.engine.analysis import capture_dataset, plan_layers
from worker.engine.metrics.death import ValueAccumulator


class _Without(ValueAccumulator):
    """The accumulator the pass builds, fed nothing: the pass as it was before it."""

    def update(self, pre: Sequence[torch.Tensor], post: Sequence[torch.Tensor]) -> None:
        return None


def _measure(network: Network, fmt: str, repeats: int) -> str:
    model = network.open(fmt)
    config = config_for(network)
    plans = plan_layers(model, config)
    data = bound(network.samples(FULL.dataset_batches * config.batch_size))
    names = vars(analysis)

    def engine(accumulator: type[ValueAccumulator]) -> None:
        names["ValueAccumulator"] = accumulator
        try:
            capture_dataset(model, data, plans, config, lambda stage, fraction: None)
        finally:
            names["ValueAccumulator"] = ValueAccumulator

    timings = compare(
        {
            "infer": lambda: infer_all(model, data, config.batch_size),
            "before": lambda: engine(_Without),
            "after": lambda: engine(ValueAccumulator),
        },
        repeats=repeats,
        warmup=2,
    )
    fastest = {name: min(rounds) for name, rounds in timings.rounds.items()}
    return (
        f"{fmt}, {data.samples} samples: engine / infer {timings.ratio('before', 'infer'):.2f}x before, "
        f"{timings.ratio('after', 'infer'):.2f}x after; "
        f"after / before {timings.ratio('after', 'before'):.3f}x "
        f"(fastest rounds: {fastest['after'] / fastest['before']:.3f}x, {fastest['before'] * 1e3:.1f} ms "
        f"-> {fastest['after'] * 1e3:.1f} ms, infer {fastest['infer'] * 1e3:.1f} ms)\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formats", nargs="*", help=f"some of {list(FORMATS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.formats) - set(FORMATS))
    if unknown:
        parser.error(f"expected formats among {list(FORMATS)}, got {unknown}")
    network = build("fcnn", Path(tempfile.mkdtemp()), batch=FULL.fcnn_batch, width=FULL.fcnn_width)
    for fmt in args.formats or FORMATS:
        sys.stdout.write(_measure(network, fmt, args.repeats))


if __name__ == "__main__":
    main()
