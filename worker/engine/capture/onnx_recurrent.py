"""The ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes whose gates are analysed as layers, as a ``.pt2``'s
are: the node's input, initial state(s) and output sequence leave the session, and the gates are
recomputed exactly from them and the node's weights (``worker.engine.capture.recurrent_gates``),
which are reordered from ONNX's gate order (LSTM ``i, o, f, c``; GRU ``z, r, h``) to PyTorch's.

A stacked PyTorch layer is exported as one node per layer and a bidirectional one as one node
with ``direction="bidirectional"``: nodes that share a module path are numbered in graph order,
so their gates carry the same names as in a ``.pt2`` (``rnn:l1.reverse:input_gate``).

Supported: ``forward`` and ``bidirectional`` directions, default activations (an RNN's ``Tanh``
or ``Relu``), no ``clip``, peepholes, ``input_forget`` or ``sequence_lens``, a GRU with
``linear_before_reset`` (PyTorch's form), weights stored as initializers and the output sequence
``Y`` produced. Every other recurrent node stays a warning (``worker.engine.capture.recurrent``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from worker.engine.capture.naming import scope_path
from worker.engine.capture.recurrent_gates import RECURRENT_GATES, gate_names, stacked_gates

#: Per op, the ONNX gate blocks in PyTorch's order.
_ORDER = {"lstm": [0, 2, 3, 1], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}


@dataclass(frozen=True)
class OnnxSite:
    """One analysed recurrent node: ``values`` its input, initial state(s) (``""``: zeros) and
    output sequence names, ``weights`` ``w_ih, w_hh[, b_ih, b_hh]`` per direction in PyTorch's
    layout; ``layer`` its place among the ``layers`` nodes sharing its ``where``."""

    node: onnx.NodeProto
    op: str
    where: str
    values: list[str]
    weights: list[torch.Tensor]
    layout: int
    directions: int = 1
    layer: int = 0
    layers: int = 1

    @property
    def gates(self) -> list[tuple[str, str]]:
        numbered = self.layers > 1 or self.directions > 1
        names = gate_names(self.op, self.layer + 1, self.directions, numbered)
        return names[-len(RECURRENT_GATES[self.op]) * self.directions :]

    @property
    def exposed(self) -> list[str]:
        """The values the session hands over (absent initial states left out)."""
        return [name for name in self.values if name]

    def compute(self, arrays: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(pre, post)`` ``[B, T, H]`` of each gate from the :attr:`exposed` values' arrays."""
        given = iter(arrays)
        x, *states, y = [next(given) if name else None for name in self.values]
        assert x is not None and y is not None
        if self.layout == 0:  # x [T, B, I], h [D, B, H], y [T, D, B, H]
            x, y = x.transpose(0, 1), y.permute(2, 0, 1, 3)
        else:  # x [B, T, I], h [B, D, H], y [B, T, D, H]
            states = [h.transpose(0, 1) if h is not None else None for h in states]
        y = y.reshape(*y.shape[:2], -1)
        hidden = self.weights[1].shape[1]
        filled = [h if h is not None else x.new_zeros(self.directions, x.shape[0], hidden) for h in states]
        weights = [w.to(x.device) for w in self.weights]
        return stacked_gates(self.op, [x, *filled, y], weights, True, 1, self.directions)


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _op(node: onnx.NodeProto, attributes: dict[str, object]) -> str | None:
    """The ``RECURRENT_GATES`` key of a supported node, else None."""
    direction = attributes.get("direction", b"forward")
    if direction not in (b"forward", "forward", b"bidirectional", "bidirectional"):
        return None
    if attributes.get("clip") is not None or attributes.get("input_forget", 0):
        return None
    activations = [a.decode() if isinstance(a, bytes) else str(a) for a in attributes.get("activations", [])]  # type: ignore[attr-defined]
    if direction in (b"bidirectional", "bidirectional") and activations:
        half = len(activations) // 2
        if activations[:half] != activations[half:]:
            return None
        activations = activations[:half]
    if node.op_type == "LSTM":
        return "lstm" if activations in ([], ["Sigmoid", "Tanh", "Tanh"]) else None
    if node.op_type == "GRU":
        plain = activations in ([], ["Sigmoid", "Tanh"])
        return "gru" if plain and attributes.get("linear_before_reset", 0) == 1 else None
    if node.op_type == "RNN":
        return {(): "rnn_tanh", ("Tanh",): "rnn_tanh", ("Relu",): "rnn_relu"}.get(tuple(activations))
    return None


def _reorder(array: np.ndarray, op: str) -> torch.Tensor:
    """``[G*H, ...]`` gate blocks from ONNX's order to PyTorch's."""
    blocks = np.split(array, len(_ORDER[op]), axis=0)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([blocks[k] for k in _ORDER[op]], axis=0)))


def find_sites(proto: onnx.ModelProto) -> list[OnnxSite]:
    """The supported recurrent nodes of ``proto``'s top-level graph."""
    initializers = {init.name: init for init in proto.graph.initializer}
    sites = []
    for node in proto.graph.node:
        if node.op_type not in ("LSTM", "GRU", "RNN"):
            continue
        attributes = _attributes(node)
        op = _op(node, attributes)
        inputs = [*node.input, *[""] * (8 - len(node.input))]
        if op is None or inputs[4] or inputs[7] or not node.output or not node.output[0]:
            continue
        if not all(name in initializers for name in inputs[1:3]) or (
            inputs[3] and inputs[3] not in initializers
        ):
            continue
        w, r = (numpy_helper.to_array(initializers[name]) for name in inputs[1:3])
        directions = 2 if attributes.get("direction") in (b"bidirectional", "bidirectional") else 1
        if w.shape[0] != directions:
            continue
        weights = []
        for direction in range(directions):
            weights += [_reorder(w[direction], op), _reorder(r[direction], op)]
            if inputs[3]:
                b = numpy_helper.to_array(initializers[inputs[3]])[direction]
                weights += [_reorder(part, op) for part in np.split(b, 2)]
        states = [inputs[5], inputs[6]] if op == "lstm" else [inputs[5]]
        layout = int(attributes.get("layout", 0))  # type: ignore[call-overload]
        where = scope_path(node) or node.name or node.output[0]
        values = [inputs[0], *states, node.output[0]]
        sites.append(OnnxSite(node, op, where, values, weights, layout, directions))
    return _numbered(sites)


def _numbered(sites: list[OnnxSite]) -> list[OnnxSite]:
    """``sites`` with each one's place among those of the same op and ``where`` (the layers of
    one stacked PyTorch module), in graph order."""
    counts = Counter((site.op, site.where) for site in sites)
    seen: Counter[tuple[str, str]] = Counter()
    numbered = []
    for site in sites:
        key = (site.op, site.where)
        numbered.append(replace(site, layer=seen[key], layers=counts[key]))
        seen[key] += 1
    return numbered
