"""Converged transition density on digits nets like issue 12's (9 × 256 + BatchNorm, ReLU and
Sigmoid): TD at 512 points, the converged count, brute force at 100,000 points on the first pairs,
points evaluated, forward passes and seconds side by side.

    .venv/bin/python -m benchmarks.td_limit [--pairs 20] [--brute-pairs 4] [--epochs 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neuronscope.contracts import AnalysisConfig, Report
from neuronscope.examples import load_digits_split
from worker.engine import analyze


def _train(activation: str, out: Path, epochs: int) -> Path:
    import torch
    from torch import nn

    x_train, y_train, x_test, y_test = load_digits_split(0)
    torch.manual_seed(0)
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]
    layers: list[nn.Module] = []
    width = 64
    for _ in range(9):
        layers += [nn.Linear(width, 256), nn.BatchNorm1d(256), act()]
        width = 256
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 128):
            idx = order[start : start + 128]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    path = out / f"digits_{activation}.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x_test[:2]),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    np.savez(out / "digits.npz", x=x_test, y=y_test)
    sys.stdout.write(f"{activation}: test accuracy {accuracy:.3f}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--brute-pairs", type=int, default=4)
    parser.add_argument("--brute-points", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="td-limit-"))
    rng = np.random.default_rng(0)
    pairs = [[int(a), int(b)] for a, b in rng.choice(297, size=(args.pairs, 2), replace=False)]
    for activation in ("relu", "sigmoid"):
        model = _train(activation, out, args.epochs)
        _compare(activation, model, out / "digits.npz", pairs, args.brute_pairs, args.brute_points)


def _run(
    model: Path, dataset: Path, points: int, converged: bool, pairs: list[list[int]]
) -> tuple[Report, float]:
    td = {"pairs": pairs, "points": points, "converged": converged, "converged_max_points": 200_000}
    config = AnalysisConfig.model_validate(
        {"device": "cpu", "pairs": {"count": 100}, "transition_density": td}
    )
    started = time.perf_counter()
    report = analyze(model, dataset, config, trusted_model=True)
    return report, time.perf_counter() - started


def _compare(
    activation: str, model: Path, dataset: Path, pairs: list[list[int]], brute_pairs: int, brute_points: int
) -> None:
    plain, plain_s = _run(model, dataset, 512, False, pairs)
    full, full_s = _run(model, dataset, 512, True, pairs)
    brute, brute_s = _run(model, dataset, brute_points, False, pairs[:brute_pairs])
    td, conv, ref = plain.transition_density, full.transition_density, brute.transition_density
    assert td is not None and conv is not None and conv.converged is not None and ref is not None
    c = conv.converged
    sys.stdout.write(
        f"{activation}: {len(pairs)} pairs; TD@512 mean {td.mean:.1f} ({plain_s:.1f} s); converged mean "
        f"{c.mean:.1f}, neuron changes {c.neuron_changes_mean:.1f}, methods {c.methods}, "
        f"bisected steps {c.bisected_steps}, unresolved {c.unresolved_steps}, complete {c.complete}, "
        f"{c.points_evaluated / len(pairs):,.0f} points/pair, "
        f"{full.timings.transition_density_passes} passes ({full_s:.1f} s)\n"
    )
    for row, reference in zip(conv.samples, ref.samples, strict=False):
        sys.stdout.write(
            f"  pair ({row.i}, {row.j}): TD@512 {row.td}, converged {row.td_converged} "
            f"(changes {row.neuron_changes_converged}), TD@{brute_points:,} {reference.td} "
            f"(changes {reference.neuron_changes})\n"
        )
    sys.stdout.write(f"  TD@{brute_points:,}: {brute_s:.1f} s for {brute_pairs} pairs\n")


if __name__ == "__main__":
    main()
