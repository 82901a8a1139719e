"""1. Capture overhead: ``capture`` (pre- and post-activations of every ReLU) against ``infer`` (the
unmodified model) on the same batches and runtime; and the engine's whole capture pass
(``capture_dataset``: capture, region indices, pattern store, layer health, value accumulators)
against plain inference over the same dataset; and the share of that pass the per-neuron value
accumulators behind every kind of death (``worker.engine.metrics.death``) take."""

from __future__ import annotations

from functools import partial

from benchmarks.context import Context, bound, config_for, infer_all
from benchmarks.models import FORMATS, INPUT, RUNTIMES, Network
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import compare
from worker.engine.analysis import capture_dataset, plan_layers
from worker.engine.metrics.death import ValueAccumulator, units_of

TARGET = 1.25
SECTION = "1"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for network in ctx.networks:
        for fmt in FORMATS:
            model = network.open(fmt)
            feed = {INPUT: network.batch}
            repeats = ctx.sizes.repeats if network.label == "fcnn" else ctx.sizes.slow_repeats + 2
            timings = compare(
                {"infer": partial(model.infer, feed), "capture": partial(model.capture, feed)},
                repeats=repeats,
                warmup=ctx.sizes.warmup,
            )
            ratio = timings.ratio("capture", "infer")
            neurons = sum(layer.neurons for layer in model.layers)
            rows.append(
                Row(
                    SECTION,
                    f"capture / infer — {network.title}, {RUNTIMES[fmt]}, batch {network.batch.shape[0]}, "
                    f"{len(model.layers)} layers, {neurons:,} neurons/sample",
                    ratio,
                    f"capture {fmt_seconds(timings.median('capture'))} vs infer "
                    f"{fmt_seconds(timings.median('infer'))} per batch",
                    f"≤ {TARGET}×",
                    ratio <= TARGET,
                )
            )
    for network in ctx.networks:
        for fmt in FORMATS:
            rows.append(_dataset_pass(ctx, network, fmt))
    rows += [_value_accumulators(ctx, ctx.fcnn, fmt) for fmt in FORMATS]
    return rows


def _dataset_pass(ctx: Context, network: Network, fmt: str) -> Row:
    model = network.open(fmt)
    config = config_for(network)
    plans = plan_layers(model, config)
    batch_size = config.batch_size
    data = bound(network.samples(ctx.sizes.dataset_batches * batch_size))
    timings = compare(
        {
            "infer": lambda: infer_all(model, data, batch_size),
            "engine": lambda: capture_dataset(model, data, plans, config, lambda stage, fraction: None),
        },
        repeats=ctx.sizes.slow_repeats,
        warmup=ctx.sizes.warmup,
    )
    return Row(
        SECTION,
        f"engine capture pass (capture_dataset: capture + region indices + bit-packed pattern store + "
        f"health + value accumulators) / plain inference — {network.title}, {RUNTIMES[fmt]}, "
        f"{data.samples} samples",
        timings.ratio("engine", "infer"),
        f"engine {fmt_seconds(timings.median('engine'))} vs infer {fmt_seconds(timings.median('infer'))}",
    )


def _value_accumulators(ctx: Context, network: Network, fmt: str) -> Row:
    """The value accumulators fed the captured batches of the engine pass, against that pass."""
    model = network.open(fmt)
    config = config_for(network)
    plans = plan_layers(model, config)
    data = bound(network.samples(ctx.sizes.dataset_batches * config.batch_size))
    captured = [model.capture(batch) for _, _, batch in data.batches(config.batch_size)]
    neurons = [plan.layer.neurons for plan in plans]
    units = [units_of(plan.layer.shape) for plan in plans]

    def accumulate() -> None:
        values = ValueAccumulator(neurons, units)
        for result in captured:
            values.update(result.pre, result.post)

    timings = compare(
        {
            "engine": lambda: capture_dataset(model, data, plans, config, lambda stage, fraction: None),
            "values": accumulate,
        },
        repeats=ctx.sizes.slow_repeats,
        warmup=ctx.sizes.warmup,
    )
    return Row(
        SECTION,
        f"value accumulators (every kind of death) / engine capture pass — {network.title}, "
        f"{RUNTIMES[fmt]}, {data.samples} samples",
        timings.ratio("values", "engine"),
        f"values {fmt_seconds(timings.median('values'))} vs engine {fmt_seconds(timings.median('engine'))}",
    )
