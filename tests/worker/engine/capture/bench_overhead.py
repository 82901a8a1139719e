"""Capture overhead versus plain inference for both front ends (a measurement, not a test).

Run from the repository root::

    .venv/bin/python tests/worker/engine/capture/bench_overhead.py [--threads N]

``infer`` and ``capture`` run interleaved in rounds and the best time of each is kept, which holds
up on a machine busy with other work. With ``--threads 1`` (the default) onnxruntime and torch run
on the calling thread and the CPU time of that thread is measured; otherwise wall time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from worker.engine.capture.loader import open_model


def mlp() -> tuple[nn.Module, torch.Tensor]:
    """9 hidden ReLU layers of 256, batch 256 of 784 features."""
    layers: list[nn.Module] = [nn.Linear(784, 256), nn.ReLU()]
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(256, 10)).eval(), torch.randn(256, 784)


def convnet() -> tuple[nn.Module, torch.Tensor]:
    """3 conv layers (16, 32, 32 channels; BatchNorm on the first two), batch 256 of 3×32×32."""
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


def best_seconds(
    fns: list[Callable[[], object]], clock: Callable[[], float], rounds: int = 6, reps: int = 8
) -> list[float]:
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(reps):
                start = clock()
                fn()
                best[i] = min(best[i], clock() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / onnxruntime intra-op threads (0: default)"
    )
    threads = parser.parse_args().threads
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    if threads == 1:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    clock = time.thread_time if threads == 1 else time.perf_counter
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, build in (("mlp 9x256", mlp), ("convnet", convnet)):
            net, x = build()
            onnx_path, ts_path = Path(tmp) / "model.onnx", Path(tmp) / "model.pt"
            torch.onnx.export(
                net, (x[:2],), onnx_path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
            )
            torch.jit.save(torch.jit.trace(net, x[:2]), ts_path)
            for path, name in ((onnx_path, "x"), (ts_path, "input")):
                batch = {name: x.numpy()}
                model = open_model(path, device="cpu", example={name: x[:2].numpy()})
                plain, capture = best_seconds(
                    [lambda m=model, b=batch: m.infer(b), lambda m=model, b=batch: m.capture(b)], clock
                )
                print(
                    f"{label:10s} {model.format:11s} threads={threads or 'default'} "
                    f"layers={len(model.layers)} infer={plain * 1e3:7.2f} ms "
                    f"capture={capture * 1e3:7.2f} ms ratio={capture / plain:.2f}"
                )


if __name__ == "__main__":
    main()
