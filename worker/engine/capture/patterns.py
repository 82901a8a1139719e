"""Decomposed activations in a PyTorch graph (TorchScript or ``.pt2``), matched from their gate op
as the ONNX front end matches them: erf-GELU ``x·0.5·(1+erf(x/√2))``, tanh-GELU
``x·0.5·(1+tanh(√(2/π)·(x+0.044715·x³)))``, SiLU ``x·sigmoid(x)``, HardSwish ``x·hardsigmoid(x)``
and Mish ``x·tanh(softplus(x))``, each found as one layer from ``x`` (pre) to the final product
(post). Hand-written activations (BERT's ``gelu_python``, GPT-2's ``gelu_new``) look like this.

The graphs are seen through a :class:`GraphView`, so one matcher serves both front ends.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

V = TypeVar("V", bound=Hashable)

_SQRT2 = math.sqrt(2.0)
_TANH_GELU_SCALE = math.sqrt(2.0 / math.pi)
_MAX_PATTERN_NODES = 32
#: The gate ops a decomposed activation is matched from.
GATES = ("erf", "tanh", "sigmoid", "hardsigmoid")


class GraphView(Protocol[V]):
    """A value graph: ``op(v)`` is the aten op (``"mul"``; None for graph inputs and constants)
    that produced ``v``, ``args(v)`` its arguments, ``scalar(v)`` a constant number's value,
    ``users(v)`` the values computed from ``v`` by single-output ops."""

    def op(self, value: V) -> str | None: ...

    def args(self, value: V) -> list[V]: ...

    def scalar(self, value: V) -> float | None: ...

    def users(self, value: V) -> list[V]: ...


@dataclass(frozen=True)
class Match(Generic[V]):
    """A decomposed activation: ``pre`` → ``post``, ``values`` every value computed on the way
    (``post`` included), which no other layer may claim."""

    op_type: str
    pre: V
    post: V
    values: frozenset[V]


class _Matcher(Generic[V]):
    def __init__(self, view: GraphView[V]) -> None:
        self.view = view

    def is_scalar(self, value: V, expected: float, rel: float = 1e-3) -> bool:
        found = self.view.scalar(value)
        return found is not None and math.isclose(found, expected, rel_tol=rel, abs_tol=1e-6)

    def binary(self, value: V, op: str) -> tuple[V, V] | None:
        """The two operands when ``value`` is ``op(a, b)`` (an ``add`` / ``sub`` with ``alpha`` 1)."""
        if self.view.op(value) != op:
            return None
        args = self.view.args(value)
        if len(args) < 2 or (len(args) == 3 and not self.is_scalar(args[2], 1.0)) or len(args) > 3:
            return None
        return args[0], args[1]

    def other(self, value: V, op: str, known: V) -> V | None:
        """For ``value = op(known, y)`` or ``op(y, known)``, ``y``."""
        pair = self.binary(value, op)
        if pair is None:
            return None
        if pair[0] == known:
            return pair[1]
        return pair[0] if pair[1] == known else None

    def only_user(self, value: V, op: str) -> V | None:
        users = self.view.users(value)
        return users[0] if len(users) == 1 and self.view.op(users[0]) == op else None

    def gated(self, gate: V, x: V) -> V | None:
        """The ``mul`` computing ``x * gate`` (either order), the gate's only use."""
        product = self.only_user(gate, "mul")
        return product if product is not None and self.other(product, "mul", gate) == x else None

    def one_plus(self, value: V) -> V | None:
        """``value + 1`` (either order), the value's only use."""
        total = self.only_user(value, "add")
        other = self.other(total, "add", value) if total is not None else None
        return total if other is not None and self.is_scalar(other, 1.0) else None

    def half_product(self, x: V, factor: V) -> V | None:
        """The value ``x * 0.5 * factor`` in any association: ``(x*f)*0.5``, ``x*(0.5*f)``,
        ``(x*0.5)*f``, ``0.5*(x*f)``."""
        for first in self.view.users(factor):
            other = self.other(first, "mul", factor)
            if other is None:
                continue
            if other == x or self.is_scalar(other, 0.5):
                for second in self.view.users(first):
                    rest = self.other(second, "mul", first)
                    if rest is not None and (self.is_scalar(rest, 0.5) if other == x else rest == x):
                        return second
            half = self.binary(other, "mul")
            if half is not None and x in half and any(self.is_scalar(v, 0.5) for v in half if v != x):
                return first
        return None

    def erf_gelu(self, erf: V) -> tuple[V, V] | None:
        args = self.view.args(erf)
        if not args:
            return None
        scaled = args[0]
        x: V | None = None
        divided = self.binary(scaled, "div")
        if divided is not None and self.is_scalar(divided[1], _SQRT2):
            x = divided[0]
        product = self.binary(scaled, "mul")
        if product is not None:
            for i in (0, 1):
                if self.is_scalar(product[1 - i], 1.0 / _SQRT2):
                    x = product[i]
        factor = self.one_plus(erf) if x is not None else None
        final = self.half_product(x, factor) if x is not None and factor is not None else None
        return (x, final) if x is not None and final is not None else None

    def tanh_gelu(self, tanh: V) -> tuple[V, V] | None:
        args = self.view.args(tanh)
        scaled = self.binary(args[0], "mul") if args else None
        if scaled is None:
            return None
        inner = next((scaled[1 - i] for i in (0, 1) if self.is_scalar(scaled[i], _TANH_GELU_SCALE)), None)
        total = self.binary(inner, "add") if inner is not None else None
        if total is None:
            return None
        for x, cubic in ((total[0], total[1]), (total[1], total[0])):
            if self.is_cubic_term(x, cubic):
                factor = self.one_plus(tanh)
                final = self.half_product(x, factor) if factor is not None else None
                if final is not None:
                    return x, final
        return None

    def is_cubic_term(self, x: V, value: V) -> bool:
        """``0.044715 * x³`` with ``x³`` as ``pow(x, 3)``, ``x * (x * x)`` or ``(x * x) * x``."""
        product = self.binary(value, "mul")
        if product is None or not any(self.is_scalar(v, 0.044715) for v in product):
            return False
        cube = product[1] if self.is_scalar(product[0], 0.044715) else product[0]
        power = self.binary(cube, "pow")
        if power is not None:
            return power[0] == x and self.is_scalar(power[1], 3.0)
        square = self.other(cube, "mul", x)
        pair = self.binary(square, "mul") if square is not None else None
        return pair is not None and pair == (x, x)

    def gate_match(self, gate: V) -> tuple[str, V, V] | None:
        op = self.view.op(gate)
        args = self.view.args(gate)
        if not args:
            return None
        if op == "erf":
            hit = self.erf_gelu(gate)
            return ("gelu", *hit) if hit is not None else None
        if op == "tanh":
            hit = self.tanh_gelu(gate)
            if hit is not None:
                return ("gelu", *hit)
            if self.view.op(args[0]) == "softplus" and len(self.view.users(args[0])) == 1:
                x = self.view.args(args[0])[0]
                final = self.gated(gate, x)
                return ("mish", x, final) if final is not None else None
            return None
        if op in ("sigmoid", "hardsigmoid"):
            final = self.gated(gate, args[0])
            return ("silu" if op == "sigmoid" else "hardswish", args[0], final) if final is not None else None
        return None

    def between(self, pre: V, post: V) -> frozenset[V]:
        """Every computed value on a path from ``pre`` to ``post`` (``post`` included)."""
        seen: set[V] = set()
        stack = [post]
        while stack and len(seen) < _MAX_PATTERN_NODES:
            value = stack.pop()
            if value in seen or value == pre or self.view.op(value) is None:
                continue
            seen.add(value)
            stack.extend(self.view.args(value))
        return frozenset(seen)


def decomposed_activations(view: GraphView[V], gates: Iterable[V]) -> list[Match[V]]:
    """The decomposed activations whose gate is among ``gates`` (values produced by an op of
    ``GATES``, in graph order); a value claimed by one match is not matched again."""
    matcher = _Matcher(view)
    claimed: set[V] = set()
    found: list[Match[V]] = []
    for gate in gates:
        if gate in claimed:
            continue
        hit = matcher.gate_match(gate)
        if hit is None:
            continue
        op_type, pre, post = hit
        values = matcher.between(pre, post)
        if gate not in values or values & claimed:
            continue
        claimed |= values
        found.append(Match(op_type, pre, post, values))
    return found
