"""Hand-written activations (BERT's erf GELU, GPT-2's tanh GELU, SiLU, Mish, HardSwish) are one
layer each, with the same name, op type and numbers in TorchScript, ``.pt2`` and ONNX."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import WIDTH, close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from worker.engine.capture.loader import open_model


def gelu_python(x: torch.Tensor) -> torch.Tensor:
    """BERT's ``gelu_python``."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``gelu_new``."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class NewGELUActivation(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_new(x)


FUNCTIONS = [
    gelu_python,
    gelu_new,
    lambda h: h * torch.sigmoid(h),
    lambda h: h * torch.tanh(F.softplus(h)),
    lambda h: h * F.hardsigmoid(h),
]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(WIDTH, WIDTH) for _ in range(6)])
        self.act_fn = NewGELUActivation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        h = gelu_python(self.fc[0](h))
        h = gelu_new(self.fc[1](h))
        h = self.fc[2](h)
        h = h * torch.sigmoid(h)
        h = self.fc[3](h)
        h = h * torch.tanh(F.softplus(h))
        h = self.fc[4](h)
        h = h * F.hardsigmoid(h)
        return self.act_fn(self.fc[5](h))


EXPECTED = [
    ("aten::gelu#0", "gelu"),
    ("aten::gelu#1", "gelu"),
    ("aten::silu#0", "silu"),
    ("aten::mish#0", "mish"),
    ("aten::hardswish#0", "hardswish"),
    ("act_fn:gelu", "gelu"),
]


def _reference(net: _Net, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of each activation, in order."""
    pres = []
    h = x
    with torch.no_grad():
        for k, function in enumerate([*FUNCTIONS, gelu_new]):
            h = net.fc[k](h)
            pres.append(h)
            h = function(h)
    return pres


@pytest.mark.parametrize("kind", ["scripted", "traced", "pt2", "onnx-dynamo", "onnx-legacy"])
def test_decomposed_activations_are_one_layer_in_every_format(
    kind: str, x: torch.Tensor, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    path = tmp_path / "model"
    if kind in ("scripted", "traced"):
        save_script(net, [x[:2]] if kind == "traced" else None, path)
    elif kind == "pt2":
        save_exported(net, [x[:2]], path)
    else:
        export_onnx(net, [x[:2]], path, dynamo=kind == "onnx-dynamo", opset=18)
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    if kind == "onnx-legacy":  # no module paths: node names, the same op types
        assert [layer.op_type for layer in model.layers] == [op for _, op in EXPECTED]
    else:
        assert [(layer.name, layer.op_type) for layer in model.layers] == EXPECTED
    functions = [*FUNCTIONS, gelu_new]
    for k, pre in enumerate(_reference(net, x)):
        assert close(result.pre[k], pre, atol=1e-4), f"{kind}: pre of {EXPECTED[k][0]}"
        assert close(result.post[k], functions[k](pre), atol=1e-4), f"{kind}: post of {EXPECTED[k][0]}"
    assert close(result.outputs, net(x).detach(), atol=1e-4)
