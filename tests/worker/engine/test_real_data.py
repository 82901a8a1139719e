"""Real data: small networks trained on scikit-learn's bundled digits, four activations, both formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    test = tmp_path_factory.mktemp("digits") / "test.npz"
    np.savez(test, x=x[1500:1800], y=y[1500:1800].astype(np.int64))
    return x[:1500], y[:1500], test


def train(activation: type[nn.Module], x: np.ndarray, y: np.ndarray) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), activation(), nn.Linear(64, 64), activation(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimiser.step()
    return model.eval()


CONFIG = AnalysisConfig.model_validate(
    {"pairs": "all", "transition_density": {"pairs": {"count": 20, "seed": 0}, "points": 64}}
)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_trained_digits_networks_in_both_formats(
    name: str, digits: tuple[np.ndarray, np.ndarray, Path], tmp_path: Path
) -> None:
    x, y, test = digits
    model = train(ACTIVATIONS[name], x, y)
    onnx_path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 64),),
        str(onnx_path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    script_path = tmp_path / f"{name}.pt"
    torch.jit.trace(model, torch.zeros(1, 64)).save(str(script_path))

    onnx_report = analyze(onnx_path, test, CONFIG)
    script_report = analyze(script_path, test, CONFIG)

    for report in (onnx_report, script_report):
        assert [layer.op_type for layer in report.model.layers] == [name, name]
        assert report.model.neurons == 128
        assert report.dataset.accuracy is not None and report.dataset.accuracy > 0.85
        same = report.pattern_similarity.same_label.mean
        different = report.pattern_similarity.different_label.mean
        assert same is not None and different is not None
        assert same > different, "a trained network separates labels in its activation patterns"
        samples = report.dataset.samples
        assert samples == 297 and report.pattern_similarity.random.pairs == samples * (samples - 1) // 2
        assert report.transition_density is not None and report.transition_density.mean is not None
    for kind in ("random", "same_label", "different_label"):
        a = getattr(onnx_report.pattern_similarity, kind).mean
        b = getattr(script_report.pattern_similarity, kind).mean
        assert abs(a - b) < 1e-3, (kind, a, b)
