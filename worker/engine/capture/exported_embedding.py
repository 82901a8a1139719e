"""Cut a ``.pt2`` program's graph at its embedding: the first floating, per-sample tensors
computed from its integer inputs (token ids, attention masks), so that transition density can
interpolate there instead of between integer ids, where interpolation means nothing.

``head`` computes those tensors for given inputs; ``tail`` runs the rest of the model from them
(the integer inputs still fed, for what only reads their shapes or values as integers).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

import torch
from torch import fx

from worker.engine.capture.exported_graph import module_path


class _State(Enum):
    INTEGER = "integer"  # computed from an integer input, no floating tensor on the way yet
    FRONTIER = "frontier"  # the first floating per-sample tensor on a path from an integer input
    AFTER = "after"  # computed from a frontier tensor


@dataclass(frozen=True)
class EmbeddingCut:
    """``frontier``: the cut's nodes in the program's graph, in graph order; ``names``: how the
    report names them (``"<module path>:<node>"``); ``tail``: the graph with each frontier node
    replaced by a placeholder named ``placeholders[k]`` (after the program's own placeholders);
    ``mapping``: program node → tail node, for the nodes the tail keeps."""

    frontier: list[fx.Node]
    names: list[str]
    placeholders: list[str]
    tail: fx.GraphModule
    mapping: dict[fx.Node, fx.Node]


def _per_sample_float(node: fx.Node, batch: object) -> bool:
    value = node.meta.get("val")
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.dim() > 0
        and str(value.shape[0]) == str(batch)
    )


def find_cut(module: fx.GraphModule, integer_inputs: Collection[str], batch: object) -> EmbeddingCut | None:
    """The cut of ``module``'s graph below the placeholders named ``integer_inputs`` (their batch
    dimension is ``batch``: a symbol or an int), None when no floating per-sample tensor is
    computed from them."""
    states: dict[fx.Node, _State] = {}
    for node in module.graph.nodes:
        if node.op == "placeholder":
            if node.name in integer_inputs:
                states[node] = _State.INTEGER
            continue
        found = {states[arg] for arg in node.all_input_nodes if arg in states}
        if _State.FRONTIER in found or _State.AFTER in found:
            states[node] = _State.AFTER
        elif _State.INTEGER in found:
            states[node] = _State.FRONTIER if _per_sample_float(node, batch) else _State.INTEGER
    frontier = [node for node, state in states.items() if state is _State.FRONTIER]
    if not frontier:
        return None
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    for node in module.graph.nodes:
        if node.op == "placeholder":
            mapping[node] = graph.node_copy(node)
    placeholders = [f"neuronscope_embedded_{k}" for k in range(len(frontier))]
    for node, name in zip(frontier, placeholders, strict=True):
        mapping[node] = graph.placeholder(name)
        mapping[node].meta = dict(node.meta)
    for node in module.graph.nodes:
        if node.op != "placeholder" and node not in mapping:
            mapping[node] = graph.node_copy(node, lambda arg: mapping[arg])
    graph.eliminate_dead_code()
    kept = set(graph.nodes)
    mapping = {node: copy for node, copy in mapping.items() if copy in kept}
    names = [f"{module_path(node)}:{node.name}" if module_path(node) else node.name for node in frontier]
    return EmbeddingCut(frontier, names, placeholders, fx.GraphModule(module, graph), mapping)
