"""5. Memory growth, one child process per size so every peak is clean: the pattern store of the
FCNN for growing N (bytes per neuron-sample; one breakpoint ⇒ bit-packed, 1/8 byte), and the peak
memory of transition density for P and 10 P pairs (it streams, so it should stay flat).

Children run ``python -m benchmarks.memory '<job json>'`` and print one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.report import Row, fmt_bytes

SECTION = "5"
ROOT = Path(__file__).resolve().parent.parent


def _children(jobs: list[dict[str, Any]], one_each: bool) -> list[dict[str, Any]]:
    """Each job's result, from a fresh child per job (``one_each``) or from one child for all."""
    if one_each:
        return [_child([job])[0] for job in jobs]
    return _child(jobs)


def _child(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", json.dumps(jobs)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child {jobs} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def run(ctx: Context) -> list[Row]:
    network = ctx.fcnn
    common = {"model": str(network.script_path), "batch": network.batch.shape[0]}
    pairs, points = ctx.sizes.memory_td_pairs, ctx.sizes.memory_td_points
    jobs = [{"kind": "patterns", "samples": samples, **common} for samples in ctx.sizes.memory_samples]
    jobs += [{"kind": "td", "pairs": count, "points": points, **common} for count in (pairs, 10 * pairs)]
    *stores, small, large = _children(jobs, ctx.sizes.child_per_measurement)
    rows: list[Row] = []
    for samples, result in zip(ctx.sizes.memory_samples, stores, strict=True):
        per = result["store_bytes"] / (samples * result["neurons"])
        rows.append(
            Row(
                SECTION,
                f"pattern store, {network.title}, N = {samples:,} synthetic samples × "
                f"{result['neurons']:,} neurons",
                None,
                f"{per:.3f} B/neuron-sample (store {fmt_bytes(result['store_bytes'])}); peak RSS "
                f"+{fmt_bytes(result['increase'])} during capture_dataset{_exact(result)} (child RSS before: "
                f"{fmt_bytes(result['before'])}, inputs {fmt_bytes(samples * 784 * 4)})",
                "≤ 1 B (0.125 bit-packed)",
                per <= 1.0,
            )
        )
    first, last = stores[0], stores[-1]
    rows.append(
        Row(
            SECTION,
            f"pattern store growth, N = {first['samples']:,} → {last['samples']:,} "
            f"({last['samples'] / first['samples']:g}× samples)",
            last["store_bytes"] / first["store_bytes"],
            f"store {fmt_bytes(first['store_bytes'])} → {fmt_bytes(last['store_bytes'])}; peak RSS increase "
            f"{fmt_bytes(first['increase'])} → {fmt_bytes(last['increase'])} (inputs excluded)",
            "linear",
            abs(last["store_bytes"] / first["store_bytes"] - last["samples"] / first["samples"])
            < 0.01 * last["samples"] / first["samples"],
        )
    )
    flat = large["increase"] <= 1.25 * small["increase"] or large["increase"] - small["increase"] < 8 * 2**20
    rows.append(
        Row(
            SECTION,
            f"TD peak RSS increase, {10 * pairs} pairs / {pairs} pairs "
            f"({points} points each, {network.title})",
            large["increase"] / max(small["increase"], 1),
            f"+{fmt_bytes(small['increase'])} → +{fmt_bytes(large['increase'])}{_exact(small)}",
            "flat (≈ 1×)",
            flat,
        )
    )
    return rows


def _exact(result: dict[str, Any]) -> str:
    return "" if result["exact"] else " (process peak: VmHWM reset unavailable)"


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: set up, then measure only the engine call."""
    import numpy as np
    import torch

    from benchmarks.context import bound
    from benchmarks.memory_probe import peak_during
    from neuronscope.contracts.config import AnalysisConfig, PairSample
    from worker.engine.allocator import keep_freed_memory
    from worker.engine.analysis import capture_dataset, plan_layers, transition_density
    from worker.engine.capture.loader import open_model
    from worker.engine.metrics import PairLists, select_pairs

    keep_freed_memory()
    samples = job.get("samples") or max(2 * job["pairs"], 64)
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((samples, 784), dtype=np.float32)
    model = open_model(Path(job["model"]), device="cpu", example={"x": inputs[:2]})
    td = (
        {"pairs": {"count": job["pairs"], "seed": 0}, "points": job["points"]}
        if job["kind"] == "td"
        else None
    )
    config = AnalysisConfig(batch_size=job["batch"], device="cpu", transition_density=td)
    plans = plan_layers(model, config)
    data = bound(inputs)

    def capture() -> Any:
        return capture_dataset(model, data, plans, config, lambda s, f: None)

    if job["kind"] == "patterns":
        result, peak = peak_during(capture)
        extra = {"store_bytes": result.store.nbytes, "samples": samples}
    else:
        dataset = capture()
        labels = torch.from_numpy(rng.integers(0, 10, size=samples))
        chosen = select_pairs(PairSample(count=job["pairs"], seed=0), samples, labels)
        assert isinstance(chosen, PairLists)
        pairs = chosen.random
        _, peak = peak_during(
            lambda: transition_density(model, data, plans, pairs, config, dataset, labels, lambda s, f: None)
        )
        extra = {"pairs": int(pairs.shape[0])}
    neurons = sum(plan.layer.neurons for plan in plans)
    return {
        "neurons": neurons,
        "before": peak.before,
        "peak": peak.peak,
        "increase": peak.increase,
        "exact": peak.exact,
        **extra,
    }


if __name__ == "__main__":
    print(json.dumps([_measure(job) for job in json.loads(sys.argv[1])]))
