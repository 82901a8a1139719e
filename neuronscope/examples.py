"""The example model and dataset for the demo and the docs: a small ReLU MLP on scikit-learn's digits.

Nothing is downloaded: the digits (8×8 images, 10 classes) ship with scikit-learn. The MLP
(64 → 64 → 64 → 10, ReLU) trains in about a second on a CPU and is exported to ONNX with the
legacy (TorchScript-based) exporter, batch dimension dynamic. The test split is written as
``.npz`` with ``x`` (float32, ``[N, 64]``, pixel values scaled to [0, 1]) and ``y`` (int64).

``variant="dying"`` plants dying neurons: half of the second hidden layer starts with a large
negative bias, so those ReLUs never fire and stay dead through training (a model version whose
report and gates differ, for ``neuronscope compare``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Variant = Literal["healthy", "dying"]


@dataclass(frozen=True)
class ExampleFiles:
    model: Path
    dataset: Path
    test_accuracy: float


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of the digits, x scaled to [0, 1] (float32), y int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def make_example(
    out_dir: Path,
    *,
    variant: Variant = "healthy",
    epochs: int = 30,
    seed: int = 0,
    name: str | None = None,
) -> ExampleFiles:
    """Train the example MLP, write ``<name>.onnx`` and ``digits_test.npz`` into ``out_dir``."""
    import torch
    from torch import nn

    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    if variant == "dying":
        with torch.no_grad():
            layer = model[2]
            assert isinstance(layer, nn.Linear)
            layer.bias[: layer.out_features // 2] = -50.0
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    batch = 128
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    stem = name or ("digits_mlp" if variant == "healthy" else f"digits_mlp_{variant}")
    model_path = out_dir / f"{stem}.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x_test[:1]),),
        str(model_path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    dataset_path = out_dir / "digits_test.npz"
    np.savez(dataset_path, x=x_test, y=y_test)
    return ExampleFiles(model=model_path, dataset=dataset_path, test_accuracy=accuracy)
