"""The benchmark networks and their exports: the paper's FCNN and a VGG-style CIFAR-size conv net.

Both are built with a fixed seed, exported to ONNX (legacy exporter, dynamic batch) and to
TorchScript (traced), and opened with the engine's ``open_model``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.capture.base import CaptureModel
from worker.engine.capture.loader import open_model

INPUT = "x"


#: The two front ends, as the engine names them.
FORMATS = ("onnx", "torchscript")
RUNTIMES = {"onnx": "ONNX Runtime", "torchscript": "TorchScript"}


@dataclass(frozen=True)
class Network:
    """One benchmark network: the eager module, its exports and one batch of synthetic inputs.

    Both exports take one input named ``x`` (``forward(self, x)`` when traced).
    """

    label: str
    title: str
    module: nn.Module
    onnx_path: Path
    script_path: Path
    batch: np.ndarray

    @property
    def neurons(self) -> int:
        """Activation neurons per sample (every element of every ReLU's input)."""
        return int(sum(layer.neurons for layer in self.open("onnx").layers))

    def samples(self, count: int, seed: int = 1) -> np.ndarray:
        """``[count, ...]`` float32 standard-normal inputs of this network's shape."""
        shape = self.batch.shape[1:]
        return np.random.default_rng(seed).standard_normal((count, *shape), dtype=np.float32)

    def open(self, fmt: str) -> CaptureModel:
        """The engine's capture model for ``fmt`` (``"onnx"`` or ``"torchscript"``) on the CPU."""
        path = self.onnx_path if fmt == "onnx" else self.script_path
        return open_model(path, device="cpu", example={INPUT: self.batch[:2]})


class FCNN(nn.Module):
    """The paper's FCNN: 784 → 9 × 256 hidden (ReLU) → 10; 2,304 neurons per sample."""

    def __init__(self, width: int = 256, depth: int = 9) -> None:
        super().__init__()
        sizes = [784] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = nn.ModuleList(nn.ReLU() for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, act in zip(self.hidden, self.act, strict=True):
            x = act(linear(x))
        logits: torch.Tensor = self.head(x)
        return logits


class VGG(nn.Module):
    """conv64-conv64-pool-conv128-conv128-pool-conv256-pool (3 × 3, ReLU) → linear 10 on 3 × 32 × 32:
    212,992 neurons per sample (``width`` scales the channels for quick runs)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        a, b, c = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 3, padding=1), nn.ReLU(),
            nn.Conv2d(a, a, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(),
            nn.Conv2d(b, b, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(c * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.flatten(self.features(x), 1))
        return logits


def activation_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``nn.ReLU`` submodules of ``module`` in definition order, with their qualified names."""
    return [(name, sub) for name, sub in module.named_modules() if isinstance(sub, nn.ReLU)]


def build(label: str, directory: Path, *, batch: int, width: int | None = None, seed: int = 0) -> Network:
    """Build, export and save network ``label`` (``"fcnn"`` or ``"vgg"``) under ``directory``."""
    torch.manual_seed(seed)
    if label == "fcnn":
        module: nn.Module = FCNN(width or 256)
        shape: tuple[int, ...] = (784,)
        title = f"FCNN 784→9×{width or 256}→10"
    elif label == "vgg":
        module = VGG(width or 64)
        shape = (3, 32, 32)
        title = f"VGG-style conv net (base {width or 64} channels, 3×32×32)"
    else:
        raise ValueError(f"network: expected 'fcnn' or 'vgg', got {label!r}")
    module.eval()
    generator = np.random.default_rng(seed)
    inputs = generator.standard_normal((batch, *shape), dtype=np.float32)
    example = torch.from_numpy(inputs[:2])
    onnx_path, script_path = directory / f"{label}.onnx", directory / f"{label}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(
                module,
                (example,),
                str(onnx_path),
                dynamo=False,
                input_names=[INPUT],
                output_names=["logits"],
                dynamic_axes={INPUT: {0: "batch"}, "logits": {0: "batch"}},
            )
            trace: Any = torch.jit.trace
            with torch.no_grad():
                torch.jit.save(trace(module, example), str(script_path))
        finally:
            logging.disable(logging.NOTSET)
    return Network(label, title, module, onnx_path, script_path, inputs)
