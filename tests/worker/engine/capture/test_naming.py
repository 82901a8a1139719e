"""One naming scheme: the same model traced, scripted, exported to ``.pt2`` and to ONNX by the
dynamo exporter gives the same layer names, op types, shapes and numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import WIDTH, close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from worker.engine.capture.loader import open_model


class _Excite(nn.Module):
    """Calls its activation from a helper method: a scripted module records that call under an
    extra ``SELF`` scope, a traced one does not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.scale_activation = nn.Hardsigmoid()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_activation(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._scale(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), _Excite(), nn.Tanh())
        self.act = nn.ReLU()
        # A ModuleList has no forward: TorchScript's call stack leaves "blocks" out.
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ELU())])
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = torch.sigmoid(self.act(h) + torch.relu(-h))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


EXPECTED = [
    ("features.1:relu", "relu"),
    ("features.2.scale_activation:hard_sigmoid", "hard_sigmoid"),
    ("features.3:tanh", "tanh"),
    ("act:relu", "relu"),
    ("aten::relu#0", "relu"),
    ("aten::sigmoid#0", "sigmoid"),
    ("blocks.0.1:elu", "elu"),
]


def _save(kind: str, net: nn.Module, x: torch.Tensor, path: Path) -> Path:
    if kind == "scripted":
        return save_script(net, None, path)
    if kind == "traced":
        return save_script(net, [x[:2]], path)
    if kind == "pt2":
        return save_exported(net, [x[:2]], path)
    # opset 18 is the dynamo exporter's own: converting to an older one drops the node metadata.
    return export_onnx(net, [x[:2]], path, dynamo=True, opset=18)


@pytest.mark.parametrize("kind", ["scripted", "traced", "pt2", "onnx-dynamo"])
def test_every_format_names_layers_by_module_path(kind: str, x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    model = open_model(_save(kind, net, x, tmp_path / "model"), device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type) for layer in model.layers] == EXPECTED
    assert all(layer.shape == (WIDTH,) for layer in model.layers)
    with torch.no_grad():
        first = net.features[0](x)
        excite = net.features[2].fc(first.relu())
        h = net.features(x)
        joined = net.act(h) + torch.relu(-h)
        block = net.blocks[0][0](torch.sigmoid(joined))
    expected_pre = [first, excite, first.relu() * nn.functional.hardsigmoid(excite), h, -h, joined, block]
    for k, pre in enumerate(expected_pre):
        assert close(result.pre[k], pre), f"{kind}: pre of {EXPECTED[k][0]}"
    assert close(result.outputs, net(x))
