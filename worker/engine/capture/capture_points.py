"""Capture points: tensors a config names (``AnalysisConfig.capture_points``) resolved to a value
of the model's graph, the same way in every front end.

A front end lists its graph's top-level nodes in execution order as :class:`GraphNode` (the
tensors each produces and reads, the module paths enclosing it); :func:`resolve_points` finds each
point's value: a module path names that module's output (the last tensor produced inside it and
used outside it, or returned), any other text a value or node name.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from neuronscope.contracts.config import CapturePoint
from worker.engine.errors import AnalysisError

V = TypeVar("V", bound=Hashable)

_SUGGESTIONS = 8


@dataclass(frozen=True)
class GraphNode(Generic[V]):
    """One node: ``outputs`` the per-sample candidate tensors it produces, ``inputs`` the values it
    reads, ``modules`` every module path enclosing it (``{"features", "features.1"}``), ``name``
    the node's own name (``""``: none)."""

    outputs: Sequence[V]
    inputs: Sequence[V]
    modules: Collection[str]
    name: str = ""


@dataclass(frozen=True)
class GraphIndex(Generic[V]):
    """Where a name leads: ``modules`` to each module's output, ``values`` to a value."""

    modules: dict[str, V] = field(default_factory=dict)
    values: dict[str, V] = field(default_factory=dict)


def index_graph(
    nodes: Sequence[GraphNode[V]], returned: Collection[V], value_names: Mapping[V, str]
) -> GraphIndex[V]:
    """Module outputs and named values of a graph whose nodes are ``nodes`` (in execution order),
    whose outputs are ``returned``; ``value_names`` names values (graph inputs included).

    >>> nodes = [GraphNode(["a"], ["x"], {"0"}, "gemm"), GraphNode(["b"], ["a"], {"1"}, "bn")]
    >>> found = index_graph(nodes, ["b"], {"a": "a", "b": "b", "x": "x"})
    >>> found.modules, sorted(found.values)
    ({'0': 'a', '1': 'b'}, ['a', 'b', 'bn', 'gemm', 'x'])
    """
    inside: dict[V, Collection[str]] = {}
    for node in nodes:
        for value in node.outputs:
            inside[value] = node.modules
    used_outside: set[tuple[V, str]] = set()
    for node in nodes:
        for value in node.inputs:
            for module in inside.get(value, ()):
                if module not in node.modules:
                    used_outside.add((value, module))
    out = set(returned)
    modules: dict[str, V] = {}
    values: dict[str, V] = dict((name, value) for value, name in value_names.items() if name)
    for node in nodes:
        for value in node.outputs:
            for module in node.modules:
                if value in out or (value, module) in used_outside:
                    modules[module] = value
        if node.name and node.outputs and node.name not in values:
            values[node.name] = node.outputs[0]
    return GraphIndex(modules, values)


def resolve_points(
    points: Sequence[CapturePoint], index: GraphIndex[V], where: str, hint: str = ""
) -> list[V]:
    """The value of each point, by module path first, then by value or node name.

    Raises ``AnalysisError(code="unknown_tensor")`` naming the closest names of ``index`` for a
    point that names nothing in it; ``where`` names the model in that message, ``hint`` is added
    to it.
    """
    found = []
    for point in points:
        value = index.modules.get(point.tensor, index.values.get(point.tensor))
        if value is None:
            known = [*index.modules, *index.values]
            close = difflib.get_close_matches(point.tensor, known, n=_SUGGESTIONS, cutoff=0.5)
            suggestion = f"closest: {close}" if close else f"e.g. {sorted(index.modules)[:_SUGGESTIONS]}"
            raise AnalysisError(
                f"capture point {point.tensor!r}: expected a module path or a tensor name of {where}, "
                f"got none of its {len(known)} names ({suggestion}){hint}",
                code="unknown_tensor",
            )
        found.append(value)
    return found


def check_shape(point: CapturePoint, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """``shape``, the per-sample shape the point's tensor had on the example batch, or
    ``AnalysisError(code="unknown_tensor")`` when it had none (not a float ``[B, ...]`` tensor)."""
    if shape is None:
        raise AnalysisError(
            f"capture point {point.tensor!r}: expected a float tensor with the batch as its first "
            "dimension, got a tensor that is not one (a weight, a shape or an integer tensor)",
            code="unknown_tensor",
        )
    return shape


def layer_names(points: Sequence[CapturePoint], taken: Collection[str]) -> list[str]:
    """The points' layer names; ``AnalysisError(code="unknown_tensor")`` when one is already the
    name of an activation layer (``taken``)."""
    names = [point.layer_name for point in points]
    clash = [name for name in names if name in taken]
    if clash:
        raise AnalysisError(
            f"capture points: expected layer names other than the activation layers', got {clash} "
            '(give the point a "name")',
            code="unknown_tensor",
        )
    return names
