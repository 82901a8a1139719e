"""Find the activation nodes of an ExportedProgram's functional ATen graph (``.pt2``).

After ``run_decompositions({})`` the graph has no in-place ops: every activation is one
``call_function`` node whose first argument is its pre-activation and whose output is its
post-activation. Its module path comes from the node's ``nn_module_stack``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from worker.engine.capture.torchscript_graph import ATEN_OPS


@dataclass(frozen=True)
class FxCandidate:
    """An activation node: ``op`` the aten name (``"relu"``), ``path`` its module path or ``""``."""

    node: fx.Node
    op: str
    op_type: str
    path: str
    default_breakpoints: tuple[float, ...] | None = None


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


def _floating_tensor(value: object) -> bool:
    if not isinstance(value, fx.Node):
        return False
    meta = value.meta.get("val")
    return isinstance(meta, torch.Tensor) and meta.is_floating_point() and meta.dim() > 0


def find_activations(graph: fx.Graph) -> list[FxCandidate]:
    """Activation nodes on floating tensors, in execution order."""
    found = []
    for node in graph.nodes:
        op = aten_name(node)
        if op is None or op not in ATEN_OPS or not node.args or not _floating_tensor(node.args[0]):
            continue
        op_type, bounds = _hardtanh(node) if op == "hardtanh" else (ATEN_OPS[op], None)
        found.append(FxCandidate(node, op, op_type, module_path(node), bounds))
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
