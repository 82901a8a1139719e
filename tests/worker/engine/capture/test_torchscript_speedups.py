"""Halving max pools become a maximum of four strided quarters: bit-identical, in any block, and
only where every argument says it is a 2 × 2, stride-2, unpadded, floor-mode pool."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import reference, save_script
from torch import nn

from worker.engine.capture.loader import open_model
from worker.engine.capture.torchscript_graph import inlined_graph
from worker.engine.capture.torchscript_speedups import POOL, split_halving_max_pools


class _Pools(nn.Module):
    """A halving pool (module form), then one with the functional spelling inside an ``if``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.deep = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act(self.conv(x)))
        if self.deep:
            h = F.max_pool2d(h, kernel_size=2, stride=2)
        return h


def _rewritten(module: nn.Module) -> tuple[torch.jit.ScriptModule, object, int]:
    script = torch.jit.script(module.eval())
    graph = inlined_graph(script)
    replaced = split_halving_max_pools(graph)
    return script, torch._C._create_function_from_graph("rewritten", graph), replaced


@pytest.mark.parametrize("shape", [(5, 3, 16, 16), (2, 3, 17, 13), (3, 3, 4, 7)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_same_values_and_layout_as_the_pools(shape: tuple[int, ...], channels_last: bool) -> None:
    torch.manual_seed(0)
    script, function, replaced = _rewritten(_Pools())
    x = torch.randn(*shape)
    x[0, :, :2, :2] = float("nan")
    x[-1, 0] = 0.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    with torch.inference_mode():
        expected, actual = script(x), function(script._c, x)  # type: ignore[operator]

    assert replaced == 2
    assert actual.shape == expected.shape
    for layout in (torch.contiguous_format, torch.channels_last):
        assert actual.is_contiguous(memory_format=layout) == expected.is_contiguous(memory_format=layout)
    assert torch.equal(actual.isnan(), expected.isnan()) and actual.isnan().any()
    assert torch.equal(actual.nan_to_num(), expected.nan_to_num())


class _OtherPools(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 3)
        x = F.max_pool2d(x, 2, stride=1)
        x = F.max_pool2d(x, 2, padding=1)
        x = F.max_pool2d(x, 2, ceil_mode=True)
        return F.max_pool2d(x, 2, dilation=2)


def test_other_pools_are_left_alone() -> None:
    script, function, replaced = _rewritten(_OtherPools())
    x = torch.randn(2, 3, 40, 40)

    assert replaced == 0
    assert torch.equal(function(script._c, x), script(x))  # type: ignore[operator]
    assert len(list(inlined_graph(script).findAllNodes(POOL, True))) == 5


class _Vgg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.head(self.features(x).flatten(1)))


@pytest.mark.parametrize("traced", [False, True], ids=["scripted", "traced"])
def test_capture_of_a_pooling_net_is_bit_identical_to_eager(traced: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Vgg().eval()
    x = torch.randn(6, 3, 16, 16)
    model = open_model(
        save_script(net, [x[:2]] if traced else None, tmp_path / "net.pt"),
        device="cpu",
        example={"x": x[:2].numpy()},
    )
    output, pre, post = reference(net, [x], [net.features[1], net.features[4]])

    result = model.capture({"x": x.numpy()})

    assert all(torch.equal(a, b) for a, b in zip(result.pre[:2], pre, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(result.post[:2], post, strict=True))
    assert torch.equal(result.outputs, output)
