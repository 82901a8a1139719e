"""Small torch models, their ONNX / TorchScript / .pt2 exports and reference activations from hooks."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

#: One of every activation kind both front ends know, with the canonical op type expected.
ACTIVATIONS: list[tuple[str, Callable[[], nn.Module]]] = [
    ("relu", nn.ReLU),
    ("leaky_relu", lambda: nn.LeakyReLU(0.1)),
    ("prelu", lambda: nn.PReLU(init=0.2)),
    ("elu", nn.ELU),
    ("selu", nn.SELU),
    ("celu", lambda: nn.CELU(0.7)),
    ("gelu", nn.GELU),
    ("gelu", lambda: nn.GELU(approximate="tanh")),
    ("silu", nn.SiLU),
    ("mish", nn.Mish),
    ("softplus", nn.Softplus),
    ("softplus", lambda: nn.Softplus(beta=2.0)),
    ("relu6", nn.ReLU6),
    ("hardtanh", nn.Hardtanh),
    ("clip", lambda: nn.Hardtanh(-2.0, 3.0)),
    ("hardswish", nn.Hardswish),
    ("sigmoid", nn.Sigmoid),
    ("hard_sigmoid", nn.Hardsigmoid),
    ("tanh", nn.Tanh),
]

WIDTH = 6


class ActivationNet(nn.Module):
    """``Linear(WIDTH, WIDTH)`` followed by each activation in turn, then ``Linear(WIDTH, 3)``."""

    def __init__(self, kinds: Sequence[Callable[[], nn.Module]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for make in kinds:
            layers += [nn.Linear(WIDTH, WIDTH), make()]
        layers.append(nn.Linear(WIDTH, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def activation_net(opset_min: int = 0, seed: int = 0) -> tuple[ActivationNet, list[str]]:
    """An ``ActivationNet`` with every kind (``celu`` needs ONNX opset 12) and the expected op types."""
    torch.manual_seed(seed)
    kinds = [(op, make) for op, make in ACTIVATIONS if not (op == "celu" and 0 < opset_min < 12)]
    net = ActivationNet([make for _, make in kinds]).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(2.0)
    return net, [op for op, _ in kinds]


def is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation"


def reference(
    model: nn.Module, inputs: Sequence[torch.Tensor], modules: Sequence[nn.Module] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``(output, pre, post)`` from hooks on ``modules`` (default: every activation module, in
    registration order); ``pre[k]`` / ``post[k]`` are ``[B, neurons]`` copies."""
    targets = list(modules) if modules is not None else [m for m in model.modules() if is_activation(m)]
    pre: dict[int, torch.Tensor] = {}
    post: dict[int, torch.Tensor] = {}
    handles = []
    for k, module in enumerate(targets):
        handles.append(
            module.register_forward_pre_hook(
                lambda _m, args, k=k: pre.__setitem__(k, args[0].detach().clone())
            )
        )
        handles.append(
            module.register_forward_hook(lambda _m, _a, out, k=k: post.__setitem__(k, out.detach().clone()))
        )
    try:
        with torch.no_grad():
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    size = inputs[0].shape[0]
    return (
        output,
        [pre[k].reshape(size, -1) for k in range(len(targets))],
        [post[k].reshape(size, -1) for k in range(len(targets))],
    )


def export_onnx(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    path: Path,
    *,
    opset: int | None = 17,
    dynamo: bool = False,
    names: Sequence[str] = ("x",),
    dynamic_batch: bool = True,
    optimize: bool = True,
) -> Path:
    """Export ``model`` with ``torch.onnx.export`` (legacy or dynamo, ``optimize`` passed to the
    dynamo one), batch dynamic or fixed to the batch of ``inputs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                model,
                tuple(inputs),
                path,
                dynamo=True,
                opset_version=opset,
                input_names=list(names),
                dynamic_shapes=tuple({0: batch} for _ in inputs) if dynamic_batch else None,
                external_data=False,
                verbose=False,
                optimize=optimize,
            )
        else:
            torch.onnx.export(
                model,
                tuple(inputs),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=list(names),
                dynamic_axes={name: {0: "batch"} for name in names} if dynamic_batch else None,
            )
    return path


def save_script(model: nn.Module, inputs: Sequence[torch.Tensor] | None, path: Path) -> Path:
    """``torch.jit.save`` of ``model`` traced on ``inputs``, or scripted when ``inputs`` is None."""
    scripted = torch.jit.script(model) if inputs is None else torch.jit.trace(model, tuple(inputs))
    torch.jit.save(scripted, str(path))
    return path


def save_exported(
    model: nn.Module, inputs: Sequence[torch.Tensor], path: Path, *, dynamic_batch: bool = True
) -> Path:
    """``torch.export.save`` of ``model`` exported on ``inputs``, batch dynamic or fixed."""
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in inputs) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, tuple(inputs), dynamic_shapes=shapes), str(path))
    return path


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    return bool(torch.allclose(actual.cpu(), expected.cpu(), atol=atol, rtol=1e-5))


@pytest.fixture(autouse=True)
def _quiet_exporters() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture
def x() -> torch.Tensor:
    """``[7, WIDTH]`` inputs, spread wide enough to reach every activation's regions."""
    return torch.randn(7, WIDTH, generator=torch.Generator().manual_seed(1)) * 3


def np_batch(**arrays: torch.Tensor) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in arrays.items()}
