"""Activations the ONNX front end finds but cannot analyse, named in the report's warnings so the
figures are not read as covering the whole network: those inside control flow (the bodies of
``If``, ``Loop`` and ``Scan`` nodes; only top-level values are captured) and those whose values
follow the batch along another axis than the first (a time-first ``[T, B, H]`` tensor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import onnx

from worker.engine.capture.naming import scope_path
from worker.engine.capture.onnx_graph import find_activations

_LISTED = 8


def _bodies(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _inside(graph: onnx.GraphProto) -> list[str]:
    """The activations of ``graph`` and of the bodies nested in it, named ``"<op type> <node>"``."""
    found = [f"{c.op_type} {c.anchor.name or c.post!r}" for c in find_activations(graph)]
    for node in graph.node:
        for body in _bodies(node):
            found += _inside(body)
    return found


def control_flow_warnings(graph: onnx.GraphProto) -> list[str]:
    """One warning per top-level ``If`` / ``Loop`` / ``Scan`` node of ``graph`` whose bodies hold
    activations, naming them (at most eight, then a count).

    >>> relu = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    >>> body = onnx.helper.make_graph([relu], "b", [], [onnx.helper.make_tensor_value_info("y", 1, None)])
    >>> node = onnx.helper.make_node("If", ["c"], ["y"], name="gate", then_branch=body, else_branch=body)
    >>> control_flow_warnings(onnx.helper.make_graph([node], "g", [], []))[0].split(":")[0]
    "If 'gate'"
    """
    warnings = []
    for node in graph.node:
        found = [name for body in _bodies(node) for name in _inside(body)]
        if not found:
            continue
        where = scope_path(node) or node.name or (node.output[0] if node.output else "")
        listed = ", ".join(found[:_LISTED]) + (
            f" and {len(found) - _LISTED} more" if len(found) > _LISTED else ""
        )
        warnings.append(
            f"{node.op_type} {where!r}: the activations inside its bodies ({listed}) are not analysed "
            "(the ONNX front end captures top-level values only); the figures cover the other "
            "activation layers only"
        )
    return warnings


def batch_axis_warnings(names: Sequence[str]) -> list[str]:
    """A warning naming the activations whose values change with the batch size but not along
    their first axis (none when ``names`` is empty).

    >>> batch_axis_warnings(["rnn:tanh#0"])[0].split(":")[0]
    '1 activation layer(s) not analysed'
    """
    if not names:
        return []
    listed = ", ".join(names[:_LISTED]) + (
        f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    )
    return [
        f"{len(names)} activation layer(s) not analysed: their values follow the batch along another axis "
        f"than the first (e.g. time-first [T, B, H]): {listed}; the figures cover the other activation "
        "layers only"
    ]
