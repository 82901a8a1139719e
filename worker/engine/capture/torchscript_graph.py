"""Find the activation nodes of a TorchScript module's inlined forward graph and rewrite the graph
so that each one's input and output go through ``neuronscope_capture::record``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from worker.engine.capture.record import OP_NAME

#: aten ops (without the in-place ``_``) that are activations, to canonical op types. ``hardtanh``
#: is refined by its bounds in ``_op_type``.
ATEN_OPS: dict[str, str] = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "selu": "selu",
    "celu": "celu",
    "sigmoid": "sigmoid",
    "hardsigmoid": "hard_sigmoid",
    "tanh": "tanh",
    "softplus": "softplus",
    "gelu": "gelu",
    "silu": "silu",
    "hardswish": "hardswish",
    "hardtanh": "clip",
    "relu6": "relu6",
    "mish": "mish",
    "prelu": "prelu",
}

_SCOPE = re.compile(r"([^.()]*)\(([^()]*)\)")


@dataclass(frozen=True)
class TsCandidate:
    """An activation node: ``op`` the aten name without ``_``, ``path`` its module path or ``""``."""

    node: torch._C.Node
    op: str
    op_type: str
    inplace: bool
    path: str
    default_breakpoints: tuple[float, ...] | None = None


def inlined_graph(module: torch.jit.ScriptModule) -> torch._C.Graph:
    """A fresh copy of ``module.forward``'s graph with submodule calls inlined and branches on
    constants (such as ``F.relu``'s ``inplace``) folded away."""
    forward: Any = module.forward
    graph: torch._C.Graph = forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_constant_propagation(graph)
    return graph


def _walk(block: torch._C.Block) -> Iterator[torch._C.Node]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _walk(inner)


def _constant(value: torch._C.Value) -> object:
    return value.toIValue() if value.node().kind() == "prim::Constant" else None


def _op_type(node: torch._C.Node, op: str) -> tuple[str, tuple[float, ...] | None]:
    if op != "hardtanh":
        return ATEN_OPS[op], None
    low, high = (_constant(node.inputsAt(i)) for i in (1, 2))
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "clip", None
    if (low, high) == (0.0, 6.0):
        return "relu6", None
    if (low, high) == (-1.0, 1.0):
        return "hardtanh", None
    return "clip", (float(low), float(high))


def module_path(node: torch._C.Node) -> str:
    """``"net.4.act"`` from the inlined call stack ``net(Sequential).4(Block).act(ReLU)``; the
    instances of inlined free functions (``UNKNOWN_INSTANCE``) are left out."""
    parts = [
        name for name, _ in _SCOPE.findall(node.getModuleHierarchy()) if name and name != "UNKNOWN_INSTANCE"
    ]
    return ".".join(parts)


def find_activations(graph: torch._C.Graph) -> list[TsCandidate]:
    """Activation nodes on tensors, in execution order, including those inside ``if`` / loop blocks."""
    found = []
    for node in _walk(graph.block()):
        kind = node.kind()
        if not kind.startswith("aten::") or node.outputsSize() != 1 or node.inputsSize() == 0:
            continue
        name = kind.removeprefix("aten::")
        op = name.removesuffix("_")
        if op not in ATEN_OPS or not node.inputsAt(0).type().isSubtypeOf(torch._C.TensorType.get()):
            continue
        op_type, bounds = _op_type(node, op)
        found.append(TsCandidate(node, op, op_type, name.endswith("_"), module_path(node), bounds))
    return found


def candidate_names(candidates: list[TsCandidate]) -> list[str]:
    """``"<module path>:<op>"`` (``"net.4.act:relu"``), ``#k`` appended when that is not unique;
    ``"aten::<op>#k"`` for activations outside any submodule (k counting from 0 in order)."""
    bases = [f"{c.path}:{c.op}" if c.path else f"aten::{c.op}" for c in candidates]
    counts = Counter(bases)
    seen: Counter[str] = Counter()
    names = []
    for base, candidate in zip(bases, candidates, strict=True):
        if counts[base] > 1 or not candidate.path:
            names.append(f"{base}#{seen[base]}")
            seen[base] += 1
        else:
            names.append(base)
    return names


def copy_flags(graph: torch._C.Graph) -> list[tuple[bool, bool]]:
    """Per activation of ``graph`` (as ``find_activations`` lists them), whether its pre / post
    tensor must be copied when recorded because some op may overwrite it in place later.

    The input of an in-place activation is always copied. Its output aliases the input, so its
    own write is discounted by asking again on a copy where it is swapped for the out-of-place op.
    """
    aliases: Any = graph.alias_db()
    flags = []
    for index, candidate in enumerate(find_activations(graph)):
        if not candidate.inplace:
            node = candidate.node
            flags.append(
                (bool(aliases.has_writers(node.inputsAt(0))), bool(aliases.has_writers(node.output())))
            )
            continue
        trial = graph.copy()
        node = find_activations(trial)[index].node
        functional = trial.create(node.kind().removesuffix("_"), list(node.inputs()), 1)
        functional.insertBefore(node)
        functional.output().setType(node.output().type())
        node.output().replaceAllUsesWith(functional.output())
        node.destroy()
        trial_aliases: Any = trial.alias_db()
        written = trial_aliases.has_writers(functional.inputsAt(0)) or trial_aliases.has_writers(
            functional.output()
        )
        flags.append((True, bool(written)))
    return flags


def insert_records(
    graph: torch._C.Graph, candidates: list[TsCandidate], model_id: int, flags: list[tuple[bool, bool]]
) -> None:
    """Insert ``record(pre, model_id, 2k, copy)`` before and ``record(post, model_id, 2k + 1, copy)``
    after the k-th candidate, in place."""
    g: Any = graph
    for k, (candidate, (copy_pre, copy_post)) in enumerate(zip(candidates, flags, strict=True)):
        node = candidate.node
        with graph.insert_point_guard(node):
            model = g.insertConstant(model_id)
            slots = g.insertConstant(2 * k), g.insertConstant(2 * k + 1)
            copies = g.insertConstant(copy_pre), g.insertConstant(copy_post)
        before = graph.create(OP_NAME, [node.inputsAt(0), model, slots[0], copies[0]], 0)
        before.insertBefore(node)
        after = graph.create(OP_NAME, [node.output(), model, slots[1], copies[1]], 0)
        after.insertAfter(node)
    torch._C._jit_pass_lint(graph)
