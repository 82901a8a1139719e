"""3. Pattern similarity over every pair: the engine (``pattern_similarity`` with
``select_pairs("all", ...)``) against the per-pair numpy loop it is usually written as, and against
the device's raw float32 matrix product of the same shape (the hardware limit the engine's matrix
path is bounded by)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from benchmarks.context import Context, bound, config_for
from benchmarks.memory_probe import peak_during
from benchmarks.models import Network
from benchmarks.report import Row, fmt_bytes, fmt_seconds
from benchmarks.timing import Timings, compare
from worker.engine.analysis import capture_dataset, plan_layers
from worker.engine.metrics import (
    PatternStore,
    SimilaritySummary,
    pair_counts,
    pattern_similarity,
    select_pairs,
)

SECTION = "3"
FORMAT = "torchscript"


def patterns(network: Network, samples: int) -> PatternStore:
    """The bit-packed activation patterns of ``samples`` synthetic inputs, as the engine stores them."""
    model = network.open(FORMAT)
    config = config_for(network)
    capture = capture_dataset(
        model, bound(network.samples(samples)), plan_layers(model, config), config, lambda s, f: None
    )
    return capture.store


def unpacked(store: PatternStore) -> np.ndarray:
    """``[N, M]`` uint8 region indices of every sample, every layer side by side."""
    index = torch.arange(store.n_samples)
    return torch.cat([store.rows(layer, index) for layer in range(store.num_layers)], dim=1).numpy()


def random_pairs(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``[count, 2]`` pairs ``i < j`` drawn uniformly (with replacement) from the ``n (n - 1) / 2``."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, size=4 * count)
    second = rng.integers(0, n, size=4 * count)
    keep = first != second
    pairs = np.sort(np.stack([first[keep], second[keep]], axis=1), axis=1)[:count]
    return np.ascontiguousarray(pairs)


def numpy_loop(p: np.ndarray, pairs: np.ndarray) -> list[float]:
    """The straightforward reference: one ``(p[i] == p[j]).mean()`` per pair."""
    return [float((p[i] == p[j]).mean()) for i, j in pairs]


def _loop(store: PatternStore, pairs: np.ndarray, repeats: int) -> tuple[float, bool]:
    """Seconds per pair of the numpy loop, and whether it agrees with the engine's counts."""
    p = unpacked(store)
    loop = compare({"loop": partial(numpy_loop, p, pairs)}, repeats=repeats, warmup=0)
    expected = pair_counts(store, torch.from_numpy(pairs).long()).sum(0).double() / store.total_neurons
    agrees = bool(np.allclose(np.asarray(numpy_loop(p, pairs)), expected.numpy()))
    return loop.median("loop") / len(pairs), agrees


def _against_matmul(store: PatternStore, engine: Callable[[], object], repeats: int, warmup: int) -> Timings:
    """The engine and one float32 ``B @ B.T`` of the ``[N, M]`` patterns, interleaved."""
    matrix = torch.from_numpy(unpacked(store)).to(torch.float32)

    def matmul() -> torch.Tensor:
        return matrix @ matrix.T

    return compare({"engine": engine, "matmul": matmul}, repeats=repeats, warmup=warmup)


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for network, samples in ((ctx.fcnn, ctx.sizes.ps_samples_fcnn), (ctx.vgg, ctx.sizes.ps_samples_vgg)):
        rows.extend(_rows(ctx, network, samples))
    return rows


def _rows(ctx: Context, network: Network, samples: int) -> list[Row]:
    store = patterns(network, samples)
    n, m = store.n_samples, store.total_neurons
    total_pairs = n * (n - 1) // 2
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, size=n))
    lambdas = config_for(network).lambdas
    everything = select_pairs("all", n, labels)

    def engine() -> SimilaritySummary:
        return pattern_similarity(store, everything, lambdas)

    # Memory first, before the reference matrices below take their share of the heap.
    summary, peak = peak_during(engine)
    assert summary.random.pairs == total_pairs

    pairs = random_pairs(n, ctx.sizes.loop_pairs)
    loop_per_pair, agrees = _loop(store, pairs, min(3, ctx.sizes.repeats))
    repeats = ctx.sizes.repeats if m < 100_000 else ctx.sizes.heavy_repeats
    timings = _against_matmul(store, engine, repeats, min(ctx.sizes.warmup, 1))
    engine_s, matmul_s = timings.median("engine"), timings.median("matmul")
    loop_total = loop_per_pair * total_pairs
    shape = f"N = {n:,} samples × {m:,} neurons ({network.title}), {total_pairs:,} pairs"
    flops = 2.0 * n * n * m
    fcnn = network.label == "fcnn"
    return [
        Row(
            SECTION,
            f"all-pairs PS, engine — {shape}",
            None,
            f"{fmt_seconds(engine_s)}; peak RSS +{fmt_bytes(peak.increase)}"
            + ("" if peak.exact else " (process peak)")
            + f"; pattern store {fmt_bytes(store.nbytes)}",
            "well under 1 s" if fcnn else "fits and finishes",
            engine_s < 1.0 if fcnn else True,
        ),
        Row(
            SECTION,
            f"per-pair numpy loop `(p[i] == p[j]).mean()` / engine — {shape}",
            loop_total / engine_s,
            f"loop ≈ {fmt_seconds(loop_total)} for all pairs, EXTRAPOLATED from {len(pairs):,} pairs timed "
            f"({fmt_seconds(loop_per_pair)}/pair); values {'agree' if agrees else 'DIFFER'}",
            "> 1×",
            loop_total / engine_s > 1.0,
        ),
        Row(
            SECTION,
            f"engine / raw torch float32 `B @ B.T` of the same N × M — {shape}",
            timings.ratio("engine", "matmul"),
            f"matmul {fmt_seconds(matmul_s)} ({flops / matmul_s / 1e9:.0f} GFLOP/s); engine "
            f"{fmt_seconds(engine_s)} (≙ {flops / engine_s / 1e9:.0f} GFLOP/s of the full product)",
            note="the engine computes only the upper-triangle row blocks",
        ),
    ]
