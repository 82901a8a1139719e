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
from neuronscope.contracts.config import AnalysisConfig, PairSample
from worker.engine.analysis import capture_dataset, plan_layers, transition_density
from worker.engine.metrics import PairLists, interpolation_points, select_pairs

SECTION = "4"


def run(ctx: Context) -> list[Row]:
    rows = []
    for network, pairs in ((ctx.fcnn, ctx.sizes.td_pairs_fcnn), (ctx.vgg, ctx.sizes.td_pairs_vgg)):
        for fmt in FORMATS:
            rows.append(_row(ctx, network, fmt, pairs, ctx.sizes.td_points))
    rows.append(_converged_row(ctx, ctx.fcnn, "onnx", ctx.sizes.td_pairs_fcnn, ctx.sizes.td_points))
    return rows


def _converged_row(ctx: Context, network: Network, fmt: str, count: int, points: int) -> Row:
    """The converged count (``transition_density.converged``) against TD at ``points`` points on the
    same pairs: time, and the points and forward passes it used."""
    model = network.open(fmt)
    td = {"pairs": {"count": count, "seed": 0}, "points": points}
    plain = config_for(network, transition_density=td)
    converged = config_for(network, transition_density={**td, "converged": True})
    plans = plan_layers(model, plain)
    data = bound(network.samples(max(2 * count, 8)))
    capture = capture_dataset(model, data, plans, plain, lambda s, f: None)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, size=data.samples))
    chosen = select_pairs(PairSample(count=count, seed=0), data.samples, labels)
    assert isinstance(chosen, PairLists)
    pairs = chosen.random
    results = {}

    def run(config: AnalysisConfig) -> object:
        results[config.transition_density.converged if config.transition_density else False] = (
            transition_density(model, data, plans, pairs, config, capture, labels, lambda s, f: None)
        )
        return None

    timings = compare(
        {"converged": lambda: run(converged), "td": lambda: run(plain)},
        repeats=ctx.sizes.repeats,
        warmup=min(ctx.sizes.warmup, 1),
    )
    limit = results[True].limit
    assert limit is not None
    return Row(
        SECTION,
        f"TD at k and its converged count / TD at k alone — {network.title}, {RUNTIMES[fmt]}, "
        f"{pairs.shape[0]} pairs × {points} points",
        timings.ratio("converged", "td"),
        f"mean TD {float(results[False].td.double().mean()):.1f} at k, "
        f"{float(limit.td.mean()):.1f} converged "
        f"({limit.methods.tolist().count(0)} of {pairs.shape[0]} paths exact); "
        f"{int(limit.points.sum()):,} points in {limit.passes} passes for the converged count vs "
        f"{pairs.shape[0] * points:,} points for TD at k ({fmt_seconds(timings.median('converged'))} vs "
        f"{fmt_seconds(timings.median('td'))})",
    )


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
