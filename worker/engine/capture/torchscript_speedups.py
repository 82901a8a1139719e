"""Rewrites of a TorchScript graph that give bit-identical results in less time.

Only the capture graph is rewritten; ``infer`` runs the module as it came, so the benchmarks'
plain-inference baseline stays the user's own model.

``aten::max_pool2d`` with a 2 × 2 window, stride 2, no padding or dilation and floor mode is the
pooling of VGG-style nets. On CPU, PyTorch runs it as ``max_pool2d_with_indices`` and computes
indices nobody reads; as the elementwise maximum of the four strided quarters of its input it
returns the same values (the maximum of the same four numbers, NaN propagating as in the pool) and
runs about 3.8× faster (64 × 64 × 32 × 32 floats, 2-core CPU). On the VGG benchmark net that is
about 12 % of a capture.
"""

from __future__ import annotations

from typing import Any

import torch

from worker.engine.capture.torchscript_graph import constant_value

POOL = "aten::max_pool2d"


def _constant_ints(value: torch._C.Value) -> list[int] | None:
    """The value of an ``int[]`` given as a constant or a list of constants, else None."""
    node = value.node()
    items: object = constant_value(value)
    if node.kind() == "prim::ListConstruct":
        items = [constant_value(item) for item in node.inputs()]
    if not isinstance(items, list | tuple):
        return None
    ints = [item for item in items if isinstance(item, int) and not isinstance(item, bool)]
    return ints if len(ints) == len(items) else None


def _is_halving_pool(node: torch._C.Node) -> bool:
    """``max_pool2d(x, [2, 2], [2, 2] or [], [0, 0], [1, 1], False)`` with every argument constant."""
    if node.inputsSize() != 6:
        return False
    kernel, stride, padding, dilation = (_constant_ints(node.inputsAt(i)) for i in range(1, 5))
    return (
        kernel == [2, 2]
        and stride in ([2, 2], [])
        and padding in ([0, 0], [0])
        and dilation in ([1, 1], [1])
        and constant_value(node.inputsAt(5)) is False
    )


def split_halving_max_pools(graph: torch._C.Graph) -> int:
    """Replace every halving ``max_pool2d`` of ``graph`` (in place, in any block) by
    ``maximum(maximum(x[..., 0:-1:2, 0:-1:2], x[..., 0:-1:2, 1::2]), maximum(x[..., 1::2, 0:-1:2],
    x[..., 1::2, 1::2]))``; returns how many were replaced.

    For ``H`` rows, ``0:-1:2`` and ``1::2`` both select ``H // 2`` rows (an odd last row is
    dropped, as floor mode does), so the output is ``[..., H // 2, W // 2]`` like the pool's.
    """
    replaced = 0
    every: Any = graph.findAllNodes  # type: ignore[attr-defined]
    for node in list(every(POOL, True)):
        if _is_halving_pool(node):
            node.output().replaceAllUsesWith(_Inserter(graph, node).quarters_maximum(node.inputsAt(0)))
            node.destroy()
            replaced += 1
    torch._C._jit_pass_lint(graph)
    return replaced


class _Inserter:
    """Builds nodes just before ``at``."""

    def __init__(self, graph: torch._C.Graph, at: torch._C.Node) -> None:
        self.graph = graph
        self.at = at
        g: Any = graph
        with graph.insert_point_guard(at):
            self.ints = {k: g.insertConstant(k) for k in (-2, -1, 0, 1, 2)}
            self.to_end = g.insertConstant(None)

    def op(self, kind: str, inputs: list[torch._C.Value]) -> torch._C.Value:
        created = self.graph.create(kind, inputs, 1)
        created.insertBefore(self.at)
        created.output().setType(torch._C.TensorType.get())
        result: torch._C.Value = created.output()
        return result

    def halves(self, t: torch._C.Value, dim: int) -> tuple[torch._C.Value, torch._C.Value]:
        """``t`` sliced along ``dim`` as ``0:-1:2`` and ``1::2``."""
        ints = self.ints
        even = self.op("aten::slice", [t, ints[dim], ints[0], ints[-1], ints[2]])
        odd = self.op("aten::slice", [t, ints[dim], ints[1], self.to_end, ints[2]])
        return even, odd

    def quarters_maximum(self, x: torch._C.Value) -> torch._C.Value:
        quarters = [quarter for row in self.halves(x, -2) for quarter in self.halves(row, -1)]
        top = self.op("aten::maximum", quarters[:2])
        bottom = self.op("aten::maximum", quarters[2:])
        return self.op("aten::maximum", [top, bottom])
