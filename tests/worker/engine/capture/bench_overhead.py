"""Capture overhead versus plain inference, for both front ends (a quick measurement, not a test).

Run: ``.venv/bin/python tests/worker/engine/capture/bench_overhead.py`` from the repository root.
Prints, per model and format, the median seconds of ``infer`` and ``capture`` and their ratio.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from worker.engine.capture.loader import open_model  # noqa: E402


def mlp() -> tuple[nn.Module, torch.Tensor]:
    layers: list[nn.Module] = [nn.Linear(784, 256), nn.ReLU()]
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(256, 10)).eval(), torch.randn(256, 784)


def convnet() -> tuple[nn.Module, torch.Tensor]:
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )
    return net.eval(), torch.randn(256, 3, 32, 32)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, build in (("mlp 9x256", mlp), ("convnet", convnet)):
            net, x = build()
            onnx_path, ts_path = Path(tmp) / f"{label}.onnx", Path(tmp) / f"{label}.pt"
            torch.onnx.export(
                net, (x[:2],), onnx_path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
            )
            torch.jit.save(torch.jit.trace(net, x[:2]), ts_path)
            for path, name in ((onnx_path, "x"), (ts_path, "input")):
                batch = {name: x.numpy()}
                model = open_model(path, device="cpu", example={name: x[:2].numpy()})
                plain = median_seconds(lambda m=model, b=batch: m.infer(b), 30)
                capture = median_seconds(lambda m=model, b=batch: m.capture(b), 30)
                print(
                    f"{label:10s} {model.format:11s} layers={len(model.layers)} infer={plain * 1e3:7.2f} ms "
                    f"capture={capture * 1e3:7.2f} ms ratio={capture / plain:.2f}"
                )


if __name__ == "__main__":
    main()
