"""4. Transition density: the engine's ``transition_density`` (interpolation, capture, patterns and
transition counting, streaming) against plain inference of the same interpolated points, on the
same model and batch size."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.context import Context, bound, config_for, infer_all
from benchmarks.models import FORMATS, RUNTIMES, Network
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import compare
from neuronscope.contracts.config import PairSample
from worker.engine.analysis import capture_dataset, plan_layers, transition_density
from worker.engine.metrics import PairLists, interpolation_points, select_pairs

SECTION = "4"


def run(ctx: Context) -> list[Row]:
    rows = []
    for network, pairs in ((ctx.fcnn, ctx.sizes.td_pairs_fcnn), (ctx.vgg, ctx.sizes.td_pairs_vgg)):
        for fmt in FORMATS:
            rows.append(_row(ctx, network, fmt, pairs, ctx.sizes.td_points))
    return rows


def _row(ctx: Context, network: Network, fmt: str, count: int, points: int) -> Row:
    model = network.open(fmt)
    config = config_for(network, transition_density={"pairs": {"count": count, "seed": 0}, "points": points})
    plans = plan_layers(model, config)
    data = bound(network.samples(max(2 * count, 8)))
    capture = capture_dataset(model, data, plans, config, lambda s, f: None)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, size=data.samples))
    chosen = select_pairs(PairSample(count=count, seed=0), data.samples, labels)
    assert isinstance(chosen, PairLists)
    pairs = chosen.random
    x = torch.from_numpy(data.arrays["x"])
    path_points = torch.cat([interpolation_points(x[i], x[j], points) for i, j in pairs.tolist()]).numpy()
    baseline = bound(path_points)

    def engine() -> object:
        return transition_density(model, data, plans, pairs, config, capture, labels, lambda s, f: None)

    slow = network.label != "fcnn"
    timings = compare(
        {"td": engine, "infer": lambda: infer_all(model, baseline, config.batch_size)},
        repeats=ctx.sizes.heavy_repeats if slow else ctx.sizes.repeats,
        warmup=min(ctx.sizes.warmup, 1) if slow else ctx.sizes.warmup,
    )
    total = pairs.shape[0] * points
    td_s, infer_s = timings.median("td"), timings.median("infer")
    return Row(
        SECTION,
        f"TD time per point / plain inference time per point — {network.title}, {RUNTIMES[fmt]}, "
        f"{pairs.shape[0]} pairs × {points} points, batch {config.batch_size}",
        timings.ratio("td", "infer"),
        f"TD {total / td_s:,.0f} points/s vs inference {total / infer_s:,.0f} points/s "
        f"({fmt_seconds(td_s)} vs {fmt_seconds(infer_s)})",
        note="points/s ratio is the inverse",
    )
