"""Find the activation nodes of an ExportedProgram's functional ATen graph (``.pt2``).

A functional graph (``run_decompositions({})`` where it had in-place ops): every activation is
one ``call_function`` node whose first argument is its pre-activation and whose output is its
post-activation, or a decomposed form (``worker.engine.capture.patterns``) from its ``x`` to its
final product. Its module path comes from the node's ``nn_module_stack``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from worker.engine.capture.patterns import GATES, decomposed_activations
from worker.engine.capture.torchscript_graph import ATEN_OPS, PARAM_ARGS


@dataclass(frozen=True)
class FxCandidate:
    """An activation: ``pre`` its input, ``node`` the node computing its output (the final product
    of a decomposed one), ``op`` the aten name or the decomposed op type, ``path`` its module path
    or ``""``."""

    node: fx.Node
    op: str
    op_type: str
    path: str
    pre: fx.Node
    default_breakpoints: tuple[float, ...] | None = None
    params: tuple[tuple[str, float], ...] = ()


class FxView:
    """An FX graph seen as a ``worker.engine.capture.patterns.GraphView`` (values are nodes and
    the Python numbers among their arguments)."""

    def op(self, value: object) -> str | None:
        return aten_name(value) if isinstance(value, fx.Node) else None

    def args(self, value: object) -> list[object]:
        if not isinstance(value, fx.Node):
            return []
        args: list[object] = list(value.args)
        if "alpha" in value.kwargs:
            args.append(value.kwargs["alpha"])
        return args

    def scalar(self, value: object) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def users(self, value: object) -> list[object]:
        return list(value.users) if isinstance(value, fx.Node) else []


def aten_name(node: fx.Node) -> str | None:
    """``"relu"`` for a ``call_function`` of ``torch.ops.aten.relu.default``, else None."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return None
    if target.namespace != "aten":
        return None
    return str(target.overloadpacket.__name__)


def module_path(node: fx.Node) -> str:
    """The innermost module of ``node.meta["nn_module_stack"]`` (``"features.1.act"``), ``""`` for
    the root module or no stack. A repeated call's ``@k`` suffix is left out."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return str(path).split("@", 1)[0]


def _hardtanh(node: fx.Node) -> tuple[str, tuple[float, ...] | None]:
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "clip", None
    if (low, high) == (0.0, 6.0):
        return "relu6", None
    if (low, high) == (-1.0, 1.0):
        return "hardtanh", None
    return "clip", (float(low), float(high))


def _params(node: fx.Node, op: str) -> tuple[tuple[str, float], ...]:
    """The number parameters of an aten activation (``PARAM_ARGS``: positional or by keyword,
    ``negative_slope`` for LeakyReLU's ``alpha``), in name order."""
    found = []
    for position, name in enumerate(PARAM_ARGS.get(op, ()), start=1):
        keyword = "negative_slope" if op == "leaky_relu" else name
        value = node.args[position] if len(node.args) > position else node.kwargs.get(keyword)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append((name, float(value)))
    return tuple(sorted(found))


def _floating_tensor(value: object) -> bool:
    if not isinstance(value, fx.Node):
        return False
    meta = value.meta.get("val")
    return isinstance(meta, torch.Tensor) and meta.is_floating_point() and meta.dim() > 0


def find_activations(graph: fx.Graph) -> list[FxCandidate]:
    """Activations on floating tensors, in execution order: the decomposed forms of
    ``worker.engine.capture.patterns`` (matched first, claiming their gate ops) and single ops."""
    gates = [n for n in graph.nodes if aten_name(n) in GATES and n.args and _floating_tensor(n.args[0])]
    matches = {m.post: m for m in decomposed_activations(FxView(), gates)}
    claimed = {value for m in matches.values() for value in m.values}
    found = []
    for node in graph.nodes:
        match = matches.get(node)
        if match is not None and isinstance(match.pre, fx.Node):
            found.append(FxCandidate(node, match.op_type, match.op_type, module_path(node), match.pre))
            continue
        op = aten_name(node)
        if node in claimed or op is None or op not in ATEN_OPS or not node.args:
            continue
        pre = node.args[0]
        if not isinstance(pre, fx.Node) or not _floating_tensor(pre):
            continue
        op_type, bounds = _hardtanh(node) if op == "hardtanh" else (ATEN_OPS[op], None)
        found.append(FxCandidate(node, op, op_type, module_path(node), pre, bounds, _params(node, op)))
    return found


def input_dependent(graph: fx.Graph, user_inputs: set[str]) -> set[fx.Node]:
    """The nodes whose value depends on a placeholder named in ``user_inputs`` (weights and
    constants alone do not make a value per-sample)."""
    reached: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if node.name in user_inputs:
                reached.add(node)
            continue
        if any(arg in reached for arg in node.all_input_nodes):
            reached.add(node)
    return reached
