"""Cut a TorchScript module's inlined forward graph at its embedding, as ``exported_embedding``
cuts a ``.pt2``: the first floating, per-sample tensors computed from its integer inputs (token
ids, attention masks), so transition density interpolates there rather than between integer ids.

A scripted graph records no dtypes, so which values are floating and per-sample is read from a run
of the example batch at two batch sizes. The cut values are named by their place among the
top-level nodes, which is the same in every fresh copy of the inlined graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import Enum

import torch

from worker.engine.capture.naming import resolve_path
from worker.engine.capture.torchscript_graph import module_path

#: A value of the inlined graph: (index among the top-level nodes, output offset).
Place = tuple[int, int]


class _State(Enum):
    INTEGER = "integer"
    FRONTIER = "frontier"
    AFTER = "after"


def _tensor(value: torch._C.Value) -> bool:
    return bool(value.type().isSubtypeOf(torch._C.TensorType.get()))


def _reads(node: torch._C.Node) -> Iterator[torch._C.Value]:
    """The values ``node`` reads, those its nested blocks read included."""
    yield from node.inputs()
    for block in node.blocks():
        for inner in block.nodes():
            yield from _reads(inner)


def reached_tensors(graph: torch._C.Graph, integer_inputs: Collection[int]) -> list[Place]:
    """The top-level tensor values computed from the graph inputs at positions ``integer_inputs``
    (``self`` being position 0), in graph order."""
    inputs = list(graph.inputs())
    reached = {inputs[k].unique() for k in integer_inputs}
    found = []
    for index, node in enumerate(graph.block().nodes()):
        if any(value.unique() in reached for value in _reads(node)):
            for offset, out in enumerate(node.outputs()):
                reached.add(out.unique())
                if _tensor(out):
                    found.append((index, offset))
    return found


def value_at(graph: torch._C.Graph, place: Place) -> torch._C.Value:
    """The value at ``place`` of ``graph`` (a fresh copy of the inlined graph)."""
    node = list(graph.block().nodes())[place[0]]
    return list(node.outputs())[place[1]]


@dataclass(frozen=True)
class TsCut:
    """``frontier``: the cut's places in graph order; ``names``: how the report names them
    (``"<module path>:<op>"``, ``#k`` appended where not unique)."""

    frontier: list[Place]
    names: list[str]


def find_cut(
    graph: torch._C.Graph,
    integer_inputs: Collection[int],
    per_sample_float: Collection[Place],
    modules: Collection[str] = (),
    containers: Collection[str] = (),
) -> TsCut | None:
    """The cut below the graph inputs at positions ``integer_inputs``; ``per_sample_float``: the
    places that held floating ``[B, ...]`` tensors on the example. None when there is none."""
    inputs = list(graph.inputs())
    states = {inputs[k].unique(): _State.INTEGER for k in integer_inputs}
    frontier: list[Place] = []
    labels: list[str] = []
    for index, node in enumerate(graph.block().nodes()):
        found = {states[v.unique()] for v in _reads(node) if v.unique() in states}
        if _State.FRONTIER in found or _State.AFTER in found:
            states.update({out.unique(): _State.AFTER for out in node.outputs()})
        elif _State.INTEGER in found:
            for offset, out in enumerate(node.outputs()):
                if (index, offset) in per_sample_float:
                    states[out.unique()] = _State.FRONTIER
                    frontier.append((index, offset))
                    path = resolve_path(module_path(node), modules, containers)
                    op = node.kind().split("::", 1)[-1]
                    labels.append(f"{path}:{op}" if path else op)
                else:
                    states[out.unique()] = _State.INTEGER
    if not frontier:
        return None
    counts = Counter(labels)
    seen: Counter[str] = Counter()
    names = []
    for label in labels:
        names.append(f"{label}#{seen[label]}" if counts[label] > 1 else label)
        seen[label] += 1
    return TsCut(frontier, names)


def cut_graph(graph: torch._C.Graph, frontier: list[Place]) -> list[torch._C.Value]:
    """Rewrite ``graph`` in place so every use of each frontier value reads a new graph input
    (added after the existing ones, in frontier order) instead; the nodes computing them stay,
    unused, so the graph's activations keep their order. Returns the new inputs."""
    added = []
    values = [value_at(graph, place) for place in frontier]
    for value in values:
        new = graph.addInput()
        new.setType(value.type())
        value.replaceAllUsesWith(new)
        added.append(new)
    return added
