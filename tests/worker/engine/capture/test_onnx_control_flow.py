"""Activations inside ONNX ``If`` bodies are named in a warning, not silently dropped."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from conftest import WIDTH, np_batch
from torch import nn

from worker.engine.capture.loader import open_model


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = torch.relu(h) if bool(h.sum() > 0) else torch.sigmoid(h)
        return self.head(torch.tanh(h))


def test_activations_inside_an_if_are_named_in_a_warning(x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.jit.script(_Branchy().eval()), (x[:2],), str(path), input_names=["x"], dynamo=False
        )

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert [layer.op_type for layer in model.layers] == ["tanh"]
    (warning,) = model.warnings
    assert warning.startswith("If ") and "relu" in warning and "sigmoid" in warning
    assert "not analysed" in warning


class _TimeFirst(nn.Module):
    """A tanh on a time-first ``[T, B, H]`` tensor, then a ReLU head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(x).transpose(0, 1))
        return self.head(torch.relu(h[-1]))


def test_activations_with_the_batch_on_another_axis_are_named_in_a_warning(tmp_path: Path) -> None:
    x = torch.randn(4, 5, WIDTH)
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TimeFirst().eval(),
            (x[:2],),
            str(path),
            input_names=["x"],
            dynamic_axes={"x": {0: "b"}},
            dynamo=False,
        )

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert [layer.op_type for layer in model.layers] == ["relu"]
    (warning,) = model.warnings
    assert warning.startswith("1 activation layer(s) not analysed") and "Tanh" in warning
