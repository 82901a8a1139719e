"""Cut an ONNX model's graph at its embedding, as ``exported_embedding`` cuts a ``.pt2``: the first
floating, per-sample tensors computed from its integer inputs (token ids, attention masks), so
transition density interpolates there rather than between integer ids.

Which values are floating and per-sample is read from a run of the example batch at two batch
sizes (every value computed from an integer input exposed), not from declared types, which an
exporter may leave out. The tail is a copy of the model whose cut values are graph inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import onnx

from worker.engine.capture.naming import scope_path


class _State(Enum):
    INTEGER = "integer"
    FRONTIER = "frontier"
    AFTER = "after"


@dataclass(frozen=True)
class OnnxCut:
    """``frontier``: the cut's value names in graph order; ``names``: how the report names them
    (``"<module path>:<value>"`` where the dynamo exporter recorded the path); ``tail``: the model
    with each frontier value a graph input of the same name (its producer's output renamed)."""

    frontier: list[str]
    names: list[str]
    tail: onnx.ModelProto


def reached_from(proto: onnx.ModelProto, inputs: Collection[str]) -> list[str]:
    """The top-level values computed from ``inputs``, in graph order."""
    reached = set(inputs)
    found = []
    for node in proto.graph.node:
        if any(name in reached for name in node.input):
            for out in node.output:
                if out and out not in reached:
                    reached.add(out)
                    found.append(out)
    return found


def find_cut(
    proto: onnx.ModelProto, integer_inputs: Collection[str], per_sample_float: Mapping[str, np.ndarray]
) -> OnnxCut | None:
    """The cut below ``integer_inputs``; ``per_sample_float`` holds the example values of the
    values that are floating ``[B, ...]`` tensors. None when no such value is computed from the
    integer inputs."""
    states: dict[str, _State] = {name: _State.INTEGER for name in integer_inputs}
    for node in proto.graph.node:
        found = {states[name] for name in node.input if name in states}
        if _State.FRONTIER in found or _State.AFTER in found:
            states.update({out: _State.AFTER for out in node.output if out})
        elif _State.INTEGER in found:
            for out in node.output:
                if out:
                    states[out] = _State.FRONTIER if out in per_sample_float else _State.INTEGER
    frontier = [name for name, state in states.items() if state is _State.FRONTIER]
    if not frontier:
        return None
    producers = {out: node for node in proto.graph.node for out in node.output}
    names = []
    for value in frontier:
        path = scope_path(producers[value])
        names.append(f"{path}:{value}" if path else value)
    return OnnxCut(frontier, names, _tail(proto, frontier, per_sample_float))


def _tail(
    proto: onnx.ModelProto, frontier: Sequence[str], examples: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``frontier`` values are graph inputs (typed after ``examples``,
    the batch dimension left dynamic)."""
    tail = onnx.ModelProto()
    tail.CopyFrom(proto)
    cut = set(frontier)
    for node in tail.graph.node:
        for k, out in enumerate(node.output):
            if out in cut:
                node.output[k] = f"{out}__neuronscope_cut"
    for name in frontier:
        example = examples[name]
        elem = onnx.helper.np_dtype_to_tensor_dtype(example.dtype)
        tail.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, [None, *example.shape[1:]]))
    kept = [v for v in tail.graph.value_info if v.name not in cut]
    del tail.graph.value_info[:]
    tail.graph.value_info.extend(kept)
    return tail
