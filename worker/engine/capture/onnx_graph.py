"""Find the activation layers of an ONNX graph: single activation nodes and the decomposed forms
exporters emit (GELU via Erf or Tanh, SiLU, Mish, HardSwish, Softplus with beta/threshold).

Only the top-level graph is searched; nodes inside ``If``/``Loop``/``Scan`` bodies are not.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from neuronscope.contracts.post_space import hard_sigmoid_kinks

#: Single ONNX nodes that are activations, to canonical op types (``Clip`` is handled apart).
SINGLE_OPS: dict[str, str] = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "PRelu": "prelu",
    "Elu": "elu",
    "Selu": "selu",
    "Celu": "celu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hard_sigmoid",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Gelu": "gelu",
    "HardSwish": "hardswish",
    "Mish": "mish",
}

_SQRT2 = math.sqrt(2.0)
_TANH_GELU_SCALE = math.sqrt(2.0 / math.pi)
_MAX_PATTERN_NODES = 32


@dataclass(frozen=True)
class Candidate:
    """An activation found in the graph: values ``pre`` → ``post`` (tensor names), ``anchor`` the
    node producing ``post`` (names the layer), ``order`` its index in ``graph.node``."""

    op_type: str
    pre: str
    post: str
    anchor: onnx.NodeProto
    order: int
    default_breakpoints: tuple[float, ...] | None = None
    params: tuple[tuple[str, float], ...] = ()


class _Graph:
    """Producer / consumer / constant look-ups over one ``GraphProto``."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.index = {id(node): i for i, node in enumerate(self.nodes)}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self._constants: dict[str, np.ndarray | None] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a ``Constant``'s output, else ``None``."""
        if name not in self._constants:
            self._constants[name] = self._resolve_constant(name)
        return self._constants[name]

    def _resolve_constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return np.asarray(numpy_helper.to_array(self.initializers[name]))
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return np.asarray(numpy_helper.to_array(attr.t))
                if attr.name in ("value_float", "value_int"):
                    return np.asarray(onnx.helper.get_attribute_value(attr))
                if attr.name in ("value_floats", "value_ints"):
                    return np.asarray(list(onnx.helper.get_attribute_value(attr)))
            return None
        if node.op_type in ("Cast", "Identity") and node.input:
            return self.constant(node.input[0])
        return None

    def scalar(self, name: str) -> float | None:
        value = self.constant(name)
        if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.number):
            return None
        return float(value.reshape(()))

    def is_scalar(self, name: str, expected: float, rel: float = 1e-3) -> bool:
        value = self.scalar(name)
        return value is not None and math.isclose(value, expected, rel_tol=rel, abs_tol=1e-6)

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type:
            return users[0]
        return None

    def producer_of(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _other_input(node: onnx.NodeProto, name: str) -> str | None:
    """For a binary node with ``name`` as one input, the other input."""
    if len(node.input) != 2:
        return None
    first, second = str(node.input[0]), str(node.input[1])
    if first == name:
        return second
    if second == name:
        return first
    return None


def _half_product(g: _Graph, x: str, factor: str) -> onnx.NodeProto | None:
    """The node whose output is ``x * 0.5 * factor`` in any association the exporters use.

    Handles ``(x * factor) * 0.5``, ``x * (0.5 * factor)``, ``(x * 0.5) * factor`` and
    ``0.5 * (x * factor)``.
    """
    for first in g.consumers.get(factor, []):
        if first.op_type != "Mul":
            continue
        other = _other_input(first, factor)
        if other is None:
            continue
        if other == x or g.is_scalar(other, 0.5):
            for second in g.consumers.get(first.output[0], []):
                rest = _other_input(second, first.output[0]) if second.op_type == "Mul" else None
                if rest is not None and (g.is_scalar(rest, 0.5) if other == x else rest == x):
                    return second
        half = g.producer_of(other, "Mul")
        if half is not None and x in half.input and any(g.is_scalar(n, 0.5) for n in half.input if n != x):
            return first
    return None


def _one_plus(g: _Graph, value: str) -> str | None:
    """The output of ``value + 1`` (either order), if ``value`` feeds exactly that."""
    add = g.only_consumer(value, "Add")
    if add is None:
        return None
    other = _other_input(add, value)
    return add.output[0] if other is not None and g.is_scalar(other, 1.0) else None


def _erf_gelu(g: _Graph, erf: onnx.NodeProto) -> tuple[str, onnx.NodeProto] | None:
    """``x * 0.5 * (1 + Erf(x / sqrt(2)))`` (or ``Erf(x * (1 / sqrt(2)))``) → ``(x, final Mul)``."""
    scaled = g.producer.get(erf.input[0])
    if scaled is None or len(scaled.input) != 2:
        return None
    x: str | None = None
    if scaled.op_type == "Div" and g.is_scalar(scaled.input[1], _SQRT2):
        x = scaled.input[0]
    elif scaled.op_type == "Mul":
        for i in (0, 1):
            if g.is_scalar(scaled.input[1 - i], 1.0 / _SQRT2):
                x = scaled.input[i]
    if x is None:
        return None
    factor = _one_plus(g, erf.output[0])
    final = _half_product(g, x, factor) if factor is not None else None
    return (x, final) if final is not None else None


def _tanh_gelu(g: _Graph, tanh: onnx.NodeProto) -> tuple[str, onnx.NodeProto] | None:
    """``x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x³)))`` → ``(x, final Mul)``."""
    scaled = g.producer_of(tanh.input[0], "Mul")
    if scaled is None or len(scaled.input) != 2:
        return None
    inner = _other_input(scaled, next((n for n in scaled.input if g.is_scalar(n, _TANH_GELU_SCALE)), ""))
    add = g.producer_of(inner, "Add") if inner is not None else None
    if add is None or len(add.input) != 2:
        return None
    for x, cubic in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
        if _is_cubic_term(g, x, cubic):
            factor = _one_plus(g, tanh.output[0])
            final = _half_product(g, x, factor) if factor is not None else None
            if final is not None:
                return x, final
    return None


def _is_cubic_term(g: _Graph, x: str, name: str) -> bool:
    """``0.044715 * x³`` with ``x³`` as ``Pow(x, 3)``, ``x * (x * x)`` or ``(x * x) * x``."""
    mul = g.producer_of(name, "Mul")
    if mul is None or len(mul.input) != 2:
        return False
    cube = next((n for n in mul.input if not g.is_scalar(n, 0.044715)), None)
    if cube is None or not any(g.is_scalar(n, 0.044715) for n in mul.input):
        return False
    node = g.producer.get(cube)
    if node is None:
        return False
    if node.op_type == "Pow":
        return node.input[0] == x and g.is_scalar(node.input[1], 3.0)
    if node.op_type == "Mul" and x in node.input:
        square = _other_input(node, x)
        sq = g.producer_of(square, "Mul") if square is not None else None
        return sq is not None and list(sq.input) == [x, x]
    return False


def _gated(g: _Graph, gate: onnx.NodeProto, x: str) -> onnx.NodeProto | None:
    """The ``Mul`` computing ``x * gate(x)`` (either order)."""
    mul = g.only_consumer(gate.output[0], "Mul")
    if mul is None or _other_input(mul, gate.output[0]) != x:
        return None
    return mul


def _clip_bounds(g: _Graph, clip: onnx.NodeProto) -> tuple[float | None, float | None, bool]:
    """``(min, max, known)``: Clip bounds from attributes (opset < 11) or constant inputs."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in clip.attribute}
    if "min" in attrs or "max" in attrs or len(clip.input) == 1:
        low = float(attrs["min"]) if "min" in attrs else None
        high = float(attrs["max"]) if "max" in attrs else None
        return low, high, True
    bounds: list[float | None] = []
    for i in (1, 2):
        name = clip.input[i] if len(clip.input) > i else ""
        if not name:
            bounds.append(None)
            continue
        value = g.scalar(name)
        if value is None:
            return None, None, False
        bounds.append(value)
    low, high = bounds
    low = None if low is not None and math.isinf(low) else low
    high = None if high is not None and math.isinf(high) else high
    return low, high, True


def _clip_op(g: _Graph, clip: onnx.NodeProto) -> tuple[str, tuple[float, ...] | None]:
    low, high, known = _clip_bounds(g, clip)
    if not known:
        return "clip", None
    if low == 0.0 and high == 6.0:
        return "relu6", None
    if low == -1.0 and high == 1.0:
        return "hardtanh", None
    return "clip", tuple(v for v in (low, high) if v is not None) or None


#: ONNX attributes that are layer parameters (``post_space.Params``), with the operators' defaults.
_PARAM_ATTRIBUTES: dict[str, dict[str, float]] = {
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "LeakyRelu": {"alpha": 0.01},
    "Elu": {"alpha": 1.0},
    "Celu": {"alpha": 1.0},
}


def _params(node: onnx.NodeProto) -> tuple[tuple[str, float], ...]:
    """The node's parameter attributes (defaults filled in), in name order."""
    defaults = _PARAM_ATTRIBUTES.get(node.op_type, {})
    given = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name in defaults}
    return tuple(sorted((name, float(given.get(name, value))) for name, value in defaults.items()))


def _softplus_beta(g: _Graph, node: onnx.NodeProto, x: str) -> tuple[tuple[str, float], ...]:
    """``(("beta", b),)`` when ``_softplus`` folded a ``Mul`` by ``b`` in, else ``()``."""
    scale = g.producer_of(node.input[0], "Mul") if x != node.input[0] else None
    if scale is None:
        return ()
    other = scale.input[1] if scale.input[0] == x else scale.input[0]
    beta = g.scalar(other)
    return (("beta", beta),) if beta is not None else ()


def _softplus(g: _Graph, node: onnx.NodeProto) -> tuple[str, onnx.NodeProto]:
    """Softplus with the exporters' beta scaling (``Softplus(x * b) / b``) and threshold
    (``Where(x * b > t, x, ...)``) folded in: ``(x, node producing post)``."""
    x, last = node.input[0], node
    scale = g.producer_of(x, "Mul")
    if scale is not None and len(scale.input) == 2:
        for i in (0, 1):
            beta = g.scalar(scale.input[1 - i])
            div = g.only_consumer(node.output[0], "Div")
            if beta is not None and div is not None and g.is_scalar(div.input[1], beta):
                x, last = scale.input[i], div
                break
    where = g.only_consumer(last.output[0], "Where")
    if where is not None and list(where.input[1:]) == [x, last.output[0]]:
        cond = g.producer_of(where.input[0], "Greater")
        if cond is not None and cond.input[0] in (x, node.input[0]):
            last = where
    return x, last


def _nodes_between(g: _Graph, pre: str, last: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Every node on a path from ``pre`` to ``last``'s output, ``last`` included (a pattern is
    at most a dozen nodes; the walk stops at ``_MAX_PATTERN_NODES`` whatever happens)."""
    seen: dict[int, onnx.NodeProto] = {}
    stack = [last]
    while stack and len(seen) < _MAX_PATTERN_NODES:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for name in node.input:
            if name and name != pre and name in g.producer and g.constant(name) is None:
                stack.append(g.producer[name])
    return list(seen.values())


def find_activations(graph: onnx.GraphProto) -> list[Candidate]:
    """Activation candidates of ``graph`` in execution order.

    Decomposed patterns are matched first and claim their nodes, so the ``Sigmoid`` of a SiLU or
    the ``Tanh`` of a tanh-GELU is not reported again on its own.
    """
    g = _Graph(graph)
    claimed: set[int] = set()
    found: list[Candidate] = []

    def claim(
        op_type: str,
        pre: str,
        last: onnx.NodeProto,
        bounds: tuple[float, ...] | None = None,
        params: tuple[tuple[str, float], ...] = (),
    ) -> None:
        claimed.update(id(n) for n in _nodes_between(g, pre, last))
        found.append(Candidate(op_type, pre, last.output[0], last, g.index[id(last)], bounds, params))

    patterns: list[tuple[str, str, Callable[[onnx.NodeProto], tuple[str, onnx.NodeProto] | None]]] = [
        ("Erf", "gelu", lambda n: _erf_gelu(g, n)),
        ("Tanh", "gelu", lambda n: _tanh_gelu(g, n)),
        ("Tanh", "mish", lambda n: _mish(g, n)),
        ("Sigmoid", "silu", lambda n: _swish(g, n)),
        ("HardSigmoid", "hardswish", lambda n: _swish(g, n)),
    ]
    for op, canonical, match in patterns:
        for node in _unclaimed(g.nodes, claimed, op):
            hit = match(node)
            if hit is not None:
                claim(canonical, *hit)
    for node in _unclaimed(g.nodes, claimed, "Softplus"):
        x, last = _softplus(g, node)
        claim("softplus", x, last, None, _softplus_beta(g, node, x))
    for node in _unclaimed(g.nodes, claimed, *SINGLE_OPS, "Clip"):
        op_type, bounds = _clip_op(g, node) if node.op_type == "Clip" else (SINGLE_OPS[node.op_type], None)
        params = _params(node)
        kinks = hard_sigmoid_kinks(dict(params)) if node.op_type == "HardSigmoid" else None
        if kinks is not None and not np.allclose(kinks, hard_sigmoid_kinks(), rtol=1e-6, atol=0.0):
            bounds = tuple(kinks)  # PyTorch's ±3 stored as float32 stay the op type's default
        found.append(
            Candidate(op_type, node.input[0], node.output[0], node, g.index[id(node)], bounds, params)
        )
    return sorted(found, key=lambda c: c.order)


def _unclaimed(nodes: Iterable[onnx.NodeProto], claimed: set[int], *op_types: str) -> list[onnx.NodeProto]:
    return [n for n in nodes if n.op_type in op_types and id(n) not in claimed and n.input and n.output]


def _mish(g: _Graph, tanh: onnx.NodeProto) -> tuple[str, onnx.NodeProto] | None:
    """``x * Tanh(Softplus(x))``, the Softplus with the dynamo exporter's threshold
    (``Where(x > t, x, Softplus(x))``) too."""
    source = g.producer.get(tanh.input[0])
    softplus = source if source is not None and source.op_type == "Softplus" else None
    if source is not None and source.op_type == "Where" and len(source.input) == 3:
        softplus = g.producer_of(source.input[2], "Softplus")
    if softplus is None:
        return None
    x, last = _softplus(g, softplus)
    if last.output[0] != tanh.input[0] or g.only_consumer(last.output[0], "Tanh") is None:
        return None
    mul = _gated(g, tanh, x)
    return (x, mul) if mul is not None else None


def _swish(g: _Graph, gate: onnx.NodeProto) -> tuple[str, onnx.NodeProto] | None:
    mul = _gated(g, gate, gate.input[0])
    return (gate.input[0], mul) if mul is not None else None
