"""The fused recurrent ops of a TorchScript module (``aten::lstm``, ``gru``, ``rnn_tanh``,
``rnn_relu``) whose gates are analysed as layers, as a ``.pt2``'s are: the op's input, initial
state(s) and output sequence leave the graph, the gates are recomputed exactly from them and the
module's weights (``worker.engine.capture.recurrent_gates``).

Supported: any number of layers, one or two directions, at the top level of ``forward``, weights
the module's own ``weight_ih_l<k>[_reverse]`` / ``weight_hh_l<k>[_reverse]`` (/ ``bias_ih_...`` /
``bias_hh_...``); every other recurrent op stays a warning (``worker.engine.capture.recurrent``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch

from worker.engine.capture.naming import resolve_path
from worker.engine.capture.recurrent import ATEN_RECURRENT, recurrent_warning
from worker.engine.capture.recurrent_gates import RECURRENT_GATES, gate_names
from worker.engine.capture.torchscript_graph import constant_value, module_path

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _weight_names(count: int, layers: int, directions: int) -> list[str]:
    """PyTorch's flat parameter names: layer by layer, forward before reverse, ``count`` of
    ``_WEIGHTS`` each."""
    return [
        f"{name}_l{layer}{'_reverse' if direction else ''}"
        for layer in range(layers)
        for direction in range(directions)
        for name in _WEIGHTS[:count]
    ]


@dataclass(frozen=True)
class TsSite:
    """One analysed recurrent op: ``index`` its place among the top-level nodes of the inlined
    graph (the same in every fresh copy), ``op`` a key of ``RECURRENT_GATES``, ``path`` the module
    holding its weights, ``weights`` how many of ``_WEIGHTS`` it uses per layer and direction (2 or
    4)."""

    index: int
    op: str
    path: str
    batch_first: bool
    weights: int
    layers: int = 1
    directions: int = 1

    @property
    def gates(self) -> list[tuple[str, str]]:
        return gate_names(self.op, self.layers, self.directions)

    def values(self, graph: torch._C.Graph) -> list[torch._C.Value]:
        """The op's input, initial state(s) and output sequence in ``graph``."""
        node = list(graph.block().nodes())[self.index]
        return [node.inputsAt(0), *_states(node), node.outputsAt(0)]

    def parameters(self, module: torch.jit.ScriptModule) -> list[torch.Tensor]:
        """``w_ih, w_hh[, b_ih, b_hh]`` of each layer and direction of the op's module, in
        PyTorch's flat order."""
        found = dict(module.named_parameters())
        prefix = f"{self.path}." if self.path else ""
        return [
            found[f"{prefix}{name}"] for name in _weight_names(self.weights, self.layers, self.directions)
        ]


def _states(node: torch._C.Node) -> list[torch._C.Value]:
    """The initial state(s): an LSTM's ``[h0, c0]`` list, the others' ``h0``."""
    if node.kind() == "aten::lstm":
        return list(node.inputsAt(1).node().inputs())
    return [node.inputsAt(1)]


def find_sites(
    graph: torch._C.Graph,
    module: torch.jit.ScriptModule,
    modules: Collection[str] = (),
    containers: Collection[str] = (),
) -> list[TsSite]:
    """The supported recurrent ops at the top level of ``graph`` (``module``'s inlined forward)."""
    parameters = {name for name, _ in module.named_parameters()}
    sites = []
    for index, node in enumerate(graph.block().nodes()):
        op = node.kind().removeprefix("aten::")
        if op not in RECURRENT_GATES or not node.kind().startswith("aten::") or node.inputsSize() < 9:
            continue
        if op == "lstm" and node.inputsAt(1).node().kind() != "prim::ListConstruct":
            continue
        has_biases, layers, _dropout, _train, bidirectional, batch_first = (
            constant_value(node.inputsAt(k)) for k in range(3, 9)
        )
        if not isinstance(layers, int) or layers < 1 or not isinstance(bidirectional, bool):
            continue
        if len(_states(node)) != (2 if op == "lstm" else 1):
            continue
        if not isinstance(has_biases, bool) or not isinstance(batch_first, bool):
            continue
        path = resolve_path(module_path(node), modules, containers)
        prefix = f"{path}." if path else ""
        count = 4 if has_biases else 2
        directions = 2 if bidirectional else 1
        if not all(f"{prefix}{name}" in parameters for name in _weight_names(count, layers, directions)):
            continue
        if f"{prefix}weight_hr_l0" in parameters:
            continue
        sites.append(TsSite(index, op, path, batch_first, count, layers, directions))
    return sites


def _walk(block: torch._C.Block, top: bool) -> Iterator[tuple[torch._C.Node, bool]]:
    for node in block.nodes():
        yield node, top
        for inner in node.blocks():
            yield from _walk(inner, False)


def unanalysed_warnings(
    graph: torch._C.Graph,
    sites: Sequence[TsSite],
    modules: Collection[str] = (),
    containers: Collection[str] = (),
) -> list[str]:
    """A warning per fused recurrent op of ``graph`` that is not one of the analysed ``sites``."""
    analysed = {site.index for site in sites}
    found = []
    index = -1
    for node, top in _walk(graph.block(), True):
        if top:
            index += 1
        op = node.kind().removeprefix("aten::")
        if not node.kind().startswith("aten::") or op not in ATEN_RECURRENT or (top and index in analysed):
            continue
        where = resolve_path(module_path(node), modules, containers)
        found.append(recurrent_warning(ATEN_RECURRENT[op], where))
    return found
