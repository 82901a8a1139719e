"""Find the activation nodes of a TorchScript module's inlined forward graph and rewrite the graph
so that each one's input and output leave it: as extra graph outputs for activations at the top
level of ``forward``, through ``neuronscope_capture::record`` for those inside ``if`` / loop blocks."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neuronscope.contracts.config import CAPTURE_OP_TYPE, CapturePoint
from worker.engine.capture.capture_points import GraphNode, index_graph, resolve_points
from worker.engine.capture.naming import module_layer_names, resolve_path
from worker.engine.capture.patterns import GATES, decomposed_activations
from worker.engine.capture.record import OP_NAME
from worker.engine.capture.recurrent import ATEN_RECURRENT, recurrent_warning
from worker.engine.errors import AnalysisError

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
    """An activation: ``node`` computes its output (the final product of a decomposed one), ``op``
    is the aten name without ``_`` (or the decomposed op type), ``path`` its module path or ``""``,
    ``decomposed_pre`` the input of a decomposed one (else the node's first input is)."""

    node: torch._C.Node
    op: str
    op_type: str
    inplace: bool
    path: str
    default_breakpoints: tuple[float, ...] | None = None
    decomposed_pre: torch._C.Value | None = None
    #: A capture point's value (its input and output alike); None for an activation.
    point: torch._C.Value | None = None
    params: tuple[tuple[str, float], ...] = ()

    @property
    def pre(self) -> torch._C.Value:
        """The value holding the activation's input."""
        if self.point is not None:
            return self.point
        return self.decomposed_pre if self.decomposed_pre is not None else self.node.inputsAt(0)

    @property
    def post(self) -> torch._C.Value:
        """The value holding the activation's output."""
        return self.point if self.point is not None else self.node.output()


class TsView:
    """A TorchScript graph seen as a ``worker.engine.capture.patterns.GraphView``; values are
    named by ``Value.unique()`` (the Python wrappers of one value are not one object)."""

    def __init__(self, graph: torch._C.Graph) -> None:
        self.values: dict[int, torch._C.Value] = {v.unique(): v for v in graph.inputs()}
        for node in _walk(graph.block()):
            for value in [*node.inputs(), *node.outputs()]:
                self.values[value.unique()] = value

    def op(self, value: int) -> str | None:
        node = self.values[value].node()
        kind = node.kind()
        return kind.removeprefix("aten::") if kind.startswith("aten::") and node.outputsSize() == 1 else None

    def args(self, value: int) -> list[int]:
        return [v.unique() for v in self.values[value].node().inputs()]

    def scalar(self, value: int) -> float | None:
        """A number constant, or a one-element tensor constant (as a trace records Python numbers)."""
        found = constant_value(self.values[value])
        if isinstance(found, torch.Tensor) and found.numel() == 1 and found.dtype != torch.bool:
            return float(found.item())
        return float(found) if isinstance(found, int | float) and not isinstance(found, bool) else None

    def users(self, value: int) -> list[int]:
        users = [use.user for use in self.values[value].uses()]
        return [user.output().unique() for user in users if user.outputsSize() == 1]


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


def constant_value(value: torch._C.Value) -> object:
    """The value of a ``prim::Constant`` output, else None."""
    return value.toIValue() if value.node().kind() == "prim::Constant" else None


def _op_type(node: torch._C.Node, op: str) -> tuple[str, tuple[float, ...] | None]:
    if op != "hardtanh":
        return ATEN_OPS[op], None
    low, high = (constant_value(node.inputsAt(i)) for i in (1, 2))
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "clip", None
    if (low, high) == (0.0, 6.0):
        return "relu6", None
    if (low, high) == (-1.0, 1.0):
        return "hardtanh", None
    return "clip", (float(low), float(high))


#: Positional arguments of aten activations that are layer parameters (``post_space.Params``),
#: after the input: ``softplus(x, beta, threshold)``, ``leaky_relu(x, negative_slope)``,
#: ``elu(x, alpha, scale, input_scale)``, ``celu(x, alpha)``.
PARAM_ARGS: dict[str, tuple[str, ...]] = {
    "softplus": ("beta", "threshold"),
    "leaky_relu": ("alpha",),
    "elu": ("alpha",),
    "celu": ("alpha",),
}


def _params(node: torch._C.Node, op: str) -> tuple[tuple[str, float], ...]:
    """The constant parameter arguments of an aten activation, in name order."""
    found = []
    for position, name in enumerate(PARAM_ARGS.get(op, ()), start=1):
        value = constant_value(node.inputsAt(position)) if node.inputsSize() > position else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append((name, float(value)))
    return tuple(sorted(found))


def module_path(node: torch._C.Node) -> str:
    """``"net.4.act"`` from the inlined call stack ``net(Sequential).4(Block).act(ReLU)``; the
    instances of inlined free functions (``UNKNOWN_INSTANCE``) and the ``SELF`` a scripted module's
    call of its own method adds are left out, so scripted and traced modules give one path."""
    parts = [
        name
        for name, _ in _SCOPE.findall(node.getModuleHierarchy())
        if name and name not in ("UNKNOWN_INSTANCE", "SELF")
    ]
    return ".".join(parts)


def find_activations(graph: torch._C.Graph) -> list[TsCandidate]:
    """Activations on tensors, in execution order, including those inside ``if`` / loop blocks:
    the decomposed forms of ``worker.engine.capture.patterns`` (matched first, claiming their gate
    ops) and single ops."""
    view = TsView(graph)
    gates = [
        node.output().unique()
        for node in _walk(graph.block())
        if node.kind().removeprefix("aten::") in GATES and node.outputsSize() == 1 and _on_tensor(node)
    ]
    matches = {m.post: m for m in decomposed_activations(view, gates)}
    claimed = {value for m in matches.values() for value in m.values}
    found = []
    for node in _walk(graph.block()):
        kind = node.kind()
        if not kind.startswith("aten::") or node.outputsSize() != 1 or node.inputsSize() == 0:
            continue
        match = matches.get(node.output().unique())
        if match is not None:
            pre = view.values[match.pre]
            found.append(TsCandidate(node, match.op_type, match.op_type, False, module_path(node), None, pre))
            continue
        name = kind.removeprefix("aten::")
        op = name.removesuffix("_")
        if op not in ATEN_OPS or not _on_tensor(node) or node.output().unique() in claimed:
            continue
        op_type, bounds = _op_type(node, op)
        found.append(
            TsCandidate(
                node, op, op_type, name.endswith("_"), module_path(node), bounds, params=_params(node, op)
            )
        )
    return found


def _on_tensor(node: torch._C.Node) -> bool:
    return node.inputsSize() > 0 and bool(node.inputsAt(0).type().isSubtypeOf(torch._C.TensorType.get()))


def candidate_names(
    candidates: list[TsCandidate], modules: Collection[str] = (), containers: Collection[str] = ()
) -> list[str]:
    """``"<module path>:<op type>"`` (``"net.4.act:relu"``), ``#k`` appended when that is not
    unique; ``"aten::<op type>#k"`` for activations outside any submodule
    (``worker.engine.capture.naming``). ``modules`` / ``containers``: the module's qualified names
    and those of its ModuleLists / ModuleDicts, to restore the containers a call stack leaves out."""
    paths = [resolve_path(c.path, modules, containers) for c in candidates]
    return module_layer_names(paths, [c.op_type for c in candidates])


def copy_flags(graph: torch._C.Graph) -> list[tuple[bool, bool]]:
    """Per activation of ``graph`` (as ``find_activations`` lists them), whether its pre / post
    tensor must be copied when recorded because some op may overwrite it in place later.

    The input of an in-place activation is always copied. Its output aliases the input, so its
    own write is discounted by asking again on a copy where it is swapped for the out-of-place op.
    """
    aliases: Any = graph.alias_db()
    flags = []
    candidates = find_activations(graph)
    positions = _kind_positions(graph, [c.node for c in candidates if c.inplace])
    for candidate in candidates:
        if not candidate.inplace:
            node = candidate.node
            flags.append((bool(aliases.has_writers(candidate.pre)), bool(aliases.has_writers(node.output()))))
            continue
        trial = graph.copy()
        node = _node_at(trial, candidate.node.kind(), positions[candidate.node.output().unique()])
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


def _kind_positions(graph: torch._C.Graph, nodes: list[torch._C.Node]) -> dict[int, int]:
    """Each of ``nodes``' position among the nodes of its kind (``findAllNodes``, blocks included, in
    graph order), keyed by its output's ``unique()``; ``graph.copy()`` keeps that order, so the
    position finds the node's copy."""
    find: Any = graph.findAllNodes  # type: ignore[attr-defined]
    positions: dict[int, int] = {}
    for kind in {node.kind() for node in nodes}:
        for position, node in enumerate(find(kind, True)):
            if node.outputsSize() == 1:
                positions[node.output().unique()] = position
    return positions


def _node_at(graph: torch._C.Graph, kind: str, position: int) -> torch._C.Node:
    find: Any = graph.findAllNodes  # type: ignore[attr-defined]
    found: list[torch._C.Node] = find(kind, True)
    if position >= len(found):
        raise AnalysisError(
            f"graph copy: expected at least {position + 1} {kind} nodes, got {len(found)}",
            code="internal_error",
        )
    return found[position]


@dataclass(frozen=True)
class Exposure:
    """Where the rewritten graph puts slot ``s`` (``2k`` / ``2k + 1``: the k-th activation's input /
    output): ``outputs[s]`` is its index among the extra graph outputs, or None when it goes to the
    recorder's slot ``s`` instead."""

    outputs: list[int | None]

    @property
    def extra(self) -> int:
        return sum(index is not None for index in self.outputs)


def expose(
    graph: torch._C.Graph, candidates: list[TsCandidate], model_id: int, flags: list[tuple[bool, bool]]
) -> Exposure:
    """Rewrite ``graph`` in place so every candidate's input and output leave it, copied
    (``aten::clone``) where ``flags`` say a later in-place op may overwrite them.

    A candidate at the top level of the graph runs exactly once per call: its two tensors become
    extra outputs, and the graph returns ``(original output, *extra)``, so the interpreter hands
    them over with no call back into Python. A candidate inside an ``if`` or loop block may run
    zero or many times: ``record(tensor, model_id, slot, copy)`` is inserted beside it instead.
    """
    g: Any = graph
    top = graph.block()
    extra: list[torch._C.Value] = []
    outputs: list[int | None] = []
    for k, (candidate, copies) in enumerate(zip(candidates, flags, strict=True)):
        node = candidate.node
        if node.owningBlock() != top:
            _record_around(g, node, candidate, model_id, 2 * k, copies)
            outputs.extend((None, None))
            continue
        for value, copy, before in ((candidate.pre, copies[0], True), (candidate.post, copies[1], False)):
            if copy:
                value = _clone(g, node, value, before=before)
            outputs.append(len(extra))
            extra.append(value)
    if extra:
        returned = list(graph.outputs())
        bundle = graph.create("prim::TupleConstruct", [*returned, *extra], 1)
        bundle.insertBefore(graph.return_node())
        bundle.output().setType(torch._C.TupleType([value.type() for value in [*returned, *extra]]))
        for index in reversed(range(len(returned))):
            graph.eraseOutput(index)
        graph.registerOutput(bundle.output())
    torch._C._jit_pass_lint(graph)
    return Exposure(outputs)


def _clone(g: Any, node: torch._C.Node, value: torch._C.Value, *, before: bool) -> torch._C.Value:
    """``aten::clone(value, None)`` inserted just before (or just after) ``node``."""
    with g.insert_point_guard(node):
        none = g.insertConstant(None)
    clone = g.create("aten::clone", [value, none], 1)
    if before:
        clone.insertBefore(node)
    else:
        clone.insertAfter(node)
    clone.output().setType(value.type())
    result: torch._C.Value = clone.output()
    return result


def _record_around(
    g: Any, node: torch._C.Node, candidate: TsCandidate, model_id: int, slot: int, copies: tuple[bool, bool]
) -> None:
    """``record(pre, model_id, slot, copy)`` before ``node`` and ``record(output, ..., slot + 1,
    copy)`` after it."""
    with g.insert_point_guard(node):
        model = g.insertConstant(model_id)
        slots = g.insertConstant(slot), g.insertConstant(slot + 1)
        flags = g.insertConstant(copies[0]), g.insertConstant(copies[1])
    before = g.create(OP_NAME, [candidate.pre, model, slots[0], flags[0]], 0)
    before.insertBefore(node)
    after = g.create(OP_NAME, [candidate.post, model, slots[1], flags[1]], 0)
    after.insertAfter(node)


def recurrent_layers(
    graph: torch._C.Graph, modules: Collection[str] = (), containers: Collection[str] = ()
) -> list[str]:
    """A warning per fused recurrent op (``aten::lstm``, ``gru``, ...) of ``graph``, named by
    module path: their gates are not analysed (``worker.engine.capture.recurrent``)."""
    found = []
    for node in _walk(graph.block()):
        op = node.kind().removeprefix("aten::")
        if node.kind().startswith("aten::") and op in ATEN_RECURRENT:
            found.append(
                recurrent_warning(ATEN_RECURRENT[op], resolve_path(module_path(node), modules, containers))
            )
    return found


def _tensor_outputs(node: torch._C.Node) -> list[torch._C.Value]:
    return [v for v in node.outputs() if v.type().isSubtypeOf(torch._C.TensorType.get())]


def capture_candidates(
    graph: torch._C.Graph,
    points: Sequence[CapturePoint],
    modules: Collection[str],
    containers: Collection[str],
    where: str,
) -> list[TsCandidate]:
    """A candidate per capture point, resolved among the top-level nodes of ``graph`` (inlined):
    a module path names the module's output, any other text a value's debug name
    (``worker.engine.capture.capture_points``)."""
    if not points:
        return []
    nodes: list[GraphNode[int]] = []
    named: dict[int, str] = {}
    values: dict[int, torch._C.Value] = {}
    for node in graph.block().nodes():
        if node.kind() == "prim::Constant":
            continue
        path = resolve_path(module_path(node), modules, containers)
        parts = path.split(".") if path else []
        enclosing = {".".join(parts[: k + 1]) for k in range(len(parts))}
        reads = [v.unique() for inner in [node, *_walk_blocks(node)] for v in inner.inputs()]
        outputs = _tensor_outputs(node) if node.outputsSize() == 1 else []
        for value in outputs:
            values[value.unique()] = value
            named[value.unique()] = value.debugName()
        nodes.append(GraphNode([v.unique() for v in outputs], reads, enclosing))
    index = index_graph(nodes, [v.unique() for v in graph.outputs()], named)
    found = resolve_points(points, index, where)
    return [
        TsCandidate(
            values[unique].node(),
            CAPTURE_OP_TYPE,
            CAPTURE_OP_TYPE,
            False,
            module_path(values[unique].node()),
            tuple(point.breakpoints),
            point=values[unique],
        )
        for point, unique in zip(points, found, strict=True)
    ]


def _walk_blocks(node: torch._C.Node) -> Iterator[torch._C.Node]:
    for block in node.blocks():
        yield from _walk(block)


def capture_flags(graph: torch._C.Graph, candidates: Sequence[TsCandidate]) -> list[tuple[bool, bool]]:
    """Per capture point of ``graph``, whether its value must be copied when recorded (some op may
    overwrite it in place later), as its input and as its output."""
    aliases: Any = graph.alias_db()
    return [(written, written) for written in (bool(aliases.has_writers(c.pre)) for c in candidates)]
