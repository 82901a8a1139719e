"""``.pt2`` front end: a ``torch.export`` ExportedProgram, functionalized, whose lifted graph is
copied with every selected activation's input and output appended to its outputs, so one call
captures all layers.

Loading a ``.pt2`` archive unpickles, so it is code: the worker opens it only in a confined
process, like TorchScript (``docs/security.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx

from neuronscope.contracts.config import CAPTURE_OP_TYPE, CapturePoint
from worker.engine.capture.base import (
    ActivationLayer,
    CaptureResult,
    Example,
    InputSpec,
    ModelFormat,
    example_for,
    selected_positions,
)
from worker.engine.capture.batch import Batch, as_tensor, batch_size, check_sample_shapes, doubled
from worker.engine.capture.capture_points import (
    GraphIndex,
    GraphNode,
    check_shape,
    index_graph,
    resolve_points,
)
from worker.engine.capture.capture_points import layer_names as capture_names
from worker.engine.capture.device import torch_device
from worker.engine.capture.exported_embedding import EmbeddingCut, find_cut
from worker.engine.capture.exported_graph import (
    FxCandidate,
    aten_name,
    find_activations,
    input_dependent,
    module_path,
)
from worker.engine.capture.naming import module_layer_names
from worker.engine.capture.recurrent import ATEN_RECURRENT, recurrent_warning
from worker.engine.capture.recurrent_gates import RecurrentSite, find_recurrent, stacked_gates
from worker.engine.capture.run_errors import out_of_memory, run_failure
from worker.engine.errors import AnalysisError


def load_program(path: Path, device: torch.device) -> torch.export.ExportedProgram:
    """``torch.export.load``, functionalized when it has in-place ops, and moved to ``device``.

    Raises ``AnalysisError`` with ``model_invalid`` when the archive does not load or
    ``out_of_memory``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
            if _mutates(program.graph):
                program = program.run_decompositions({})
            if device.type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, device)
    except Exception as exc:
        if (memory := out_of_memory(exc, "loading the model")) is not None:
            raise memory from exc
        raise AnalysisError(
            f"expected an ExportedProgram archive (torch.export.save) in {path.name}, "
            f"torch.export.load failed: {type(exc).__name__}: {exc}",
            code="model_invalid",
        ) from exc
    return program


def _mutates(graph: fx.Graph) -> bool:
    """Whether some op of ``graph`` writes to its inputs (``relu_``, ``add_``, ...): then the
    program is functionalized, so that no activation's input or output is overwritten later."""
    return any(
        isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable
        for node in graph.nodes
        if node.op == "call_function"
    )


def _user_placeholders(program: torch.export.ExportedProgram) -> list[fx.Node]:
    user = torch.export.graph_signature.InputKind.USER_INPUT
    kinds = {spec.arg.name: spec.kind for spec in program.graph_signature.input_specs}
    return [node for node in program.graph.nodes if node.op == "placeholder" and kinds.get(node.name) == user]


def program_inputs(program: torch.export.ExportedProgram) -> list[InputSpec]:
    """The user inputs with their exported shapes (``None`` for a dynamic dimension, the batch
    dimension included) and dtypes. Raises ``AnalysisError(code="model_unsupported")`` for a user
    input that is not a tensor."""
    specs = []
    for node in _user_placeholders(program):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise AnalysisError(
                f"expected every input of the exported program to be a tensor, got {node.name}: "
                f"{type(value).__name__}",
                code="model_unsupported",
            )
        shape = tuple(int(d) if isinstance(d, int) else None for d in value.shape)
        specs.append(InputSpec(node.name, shape, str(value.dtype).removeprefix("torch.")))
    return specs


def _lifted_values(program: torch.export.ExportedProgram) -> dict[str, object]:
    """The values of the lifted placeholders (parameters, buffers, constants) by placeholder name."""
    kind = torch.export.graph_signature.InputKind
    values: dict[str, object] = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind == kind.USER_INPUT:
            continue
        target = spec.target
        if target is None:
            raise AnalysisError(
                f"expected lifted input {spec.arg.name} ({spec.kind.name}) to name its value, got none",
                code="model_unsupported",
            )
        if target in program.state_dict:
            values[spec.arg.name] = program.state_dict[target]
        elif target in program.constants:
            values[spec.arg.name] = program.constants[target]
        else:
            raise AnalysisError(
                f"expected the value of lifted input {spec.arg.name} ({spec.kind.name}, {target}) in the "
                "archive's state dict or constants, found neither",
                code="model_unsupported",
            )
    return values


def _with_outputs(module: fx.GraphModule, extra: Sequence[fx.Node]) -> fx.GraphModule:
    """A copy of ``module`` whose graph returns ``(*original outputs, *extra)`` (flat)."""
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    returned = graph.graph_copy(module.graph, mapping)
    original = list(returned) if isinstance(returned, tuple | list) else [returned]
    graph.output((*original, *(mapping[node] for node in extra)))
    return fx.GraphModule(module, graph)


class _Runner:
    """Calls the lifted graph with its weights, in chunks of ``fixed_batch`` (padded by repeating
    the last sample) when the program was exported with a static batch size."""

    def __init__(self, program: torch.export.ExportedProgram, device: torch.device) -> None:
        self.placeholders = [n.name for n in program.graph.nodes if n.op == "placeholder"]
        self.values = _lifted_values(program)
        self.inputs = program_inputs(program)
        user_outputs = [
            i
            for i, spec in enumerate(program.graph_signature.output_specs)
            if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT
        ]
        self.first_output = user_outputs[0] if user_outputs else 0
        self.outputs = len(program.graph_signature.output_specs)
        self.device = device
        floating = [v for v in self.values.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
        self.float_dtype = floating[0].dtype if floating else torch.float32
        leading = {spec.shape[0] if spec.shape else None for spec in self.inputs}
        fixed = leading.pop() if len(leading) == 1 else None
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None

    def run(
        self,
        module: fx.GraphModule,
        batch: Batch,
        size: int,
        what: str,
        extra: Sequence[str] = (),
    ) -> list[torch.Tensor]:
        """The first user output and every extra output, each ``[size, ...]``. ``extra`` names
        placeholders after the program's own (a tail's embedded tensors), fed from ``batch``."""
        tensors = {s.name: as_tensor(batch[s.name], self.device, self.float_dtype) for s in self.inputs}
        tensors |= {name: as_tensor(batch[name], self.device, self.float_dtype) for name in extra}
        order = [*self.placeholders, *extra]
        try:
            chunk = self.fixed_batch
            if chunk is None or chunk == size:
                return self._call(module, tensors, order)
            parts = []
            for start in range(0, size, chunk):
                stop = min(start + chunk, size)
                piece = {name: _pad(t[start:stop], chunk) for name, t in tensors.items()}
                parts.append([out[: stop - start] for out in self._call(module, piece, order)])
            return [torch.cat(column, dim=0) for column in zip(*parts, strict=True)]
        except AnalysisError:
            raise
        except Exception as exc:
            shapes = {name: tuple(t.shape) for name, t in tensors.items()}
            raise run_failure(exc, what, shapes) from exc

    def _call(
        self, module: fx.GraphModule, tensors: Mapping[str, torch.Tensor], order: Sequence[str]
    ) -> list[torch.Tensor]:
        arguments = [tensors[name] if name in tensors else self.values[name] for name in order]
        with torch.inference_mode():
            raw = module(*arguments)
        flat = list(raw) if isinstance(raw, tuple | list) else [raw]
        first = flat[self.first_output]
        if not isinstance(first, torch.Tensor):
            raise AnalysisError(
                f"expected the model's first output to be a tensor, got {type(first).__name__}",
                code="model_unsupported",
            )
        return [first, *flat[self.outputs :]]


def _pad(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor`` ``[n, ...]`` padded to ``[size, ...]`` by repeating its last sample."""
    if tensor.shape[0] == size:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(size - tensor.shape[0], *tensor.shape[1:])], dim=0)


class ExportedCaptureModel:
    """A ``torch.export`` program; see ``worker.engine.capture.base.CaptureModel``."""

    format: ModelFormat = "pt2"

    def __init__(
        self,
        *,
        runner: _Runner,
        plain: fx.GraphModule,
        capturing: fx.GraphModule,
        layers: list[ActivationLayer],
        sample_shapes: dict[str, tuple[int, ...]],
        embedding: _Embedding | None = None,
        gates: _Gates | None = None,
    ) -> None:
        self.inputs = [InputSpec(s.name, (None, *s.shape[1:]), s.dtype) for s in runner.inputs]
        self._embedding = embedding
        self._gates = gates or _Gates([], [])
        self.layers = layers
        self.device = runner.device
        self.runtime = f"torch.export {torch.__version__} {runner.device}"
        self.warnings: list[str] = []
        self._runner = runner
        self._plain = plain
        self._capturing = capturing
        self._sample_shapes = sample_shapes

    def capture(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """Run ``batch`` (``[B, ...]`` per input name) and return the first output ``[B, ...]`` and
        ``pre[k]`` / ``post[k]`` ``[B, neurons_k]`` float32 for every layer."""
        size = self._check(batch)
        output, *extra = self._runner.run(self._capturing, batch, size, "a batch")
        return self._result(output, extra, size)

    def _result(self, output: torch.Tensor, extra: list[torch.Tensor], size: int) -> CaptureResult:
        """The layers' values from the extra outputs: activation inputs and outputs, then each
        analysed recurrent op's exposed values (its gates recomputed here)."""
        count = 2 * (len(self.layers) - self._gates.count)
        flat = [t.reshape(size, -1).to(torch.float32) for t in extra[:count]]
        pre, post = flat[0::2], flat[1::2]
        for gate_pre, gate_post in self._gates.values(extra[count:], self._runner.values):
            pre.append(gate_pre.reshape(size, -1).to(torch.float32))
            post.append(gate_post.reshape(size, -1).to(torch.float32))
        return CaptureResult(outputs=output.to(torch.float32), pre=pre, post=post)

    @property
    def embedding_names(self) -> list[str]:
        """The tensors transition density interpolates for integer inputs (``"<module>:<node>"``),
        keyed in :meth:`embed`'s result by :attr:`embedding_inputs`; empty when there are none."""
        return list(self._embedding.cut.names) if self._embedding is not None else []

    @property
    def embedding_inputs(self) -> list[str]:
        return list(self._embedding.cut.placeholders) if self._embedding is not None else []

    def embed(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding tensors ``[B, ...]`` of ``batch``, keyed by :attr:`embedding_inputs`."""
        if self._embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        size = self._check(batch)
        _, *values = self._runner.run(self._embedding.head, batch, size, "the embedding of a batch")
        return dict(zip(self._embedding.cut.placeholders, values, strict=True))

    def capture_embedded(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """:meth:`capture` from the embedding: ``batch`` holds the model's inputs (integer ones
        are read only for what is not embedded) and every :attr:`embedding_inputs` tensor."""
        if self._embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        size = batch_size(batch, self._runner.inputs)
        names = self._embedding.cut.placeholders
        output, *extra = self._runner.run(self._embedding.capturing, batch, size, "a batch", names)
        return self._result(output, extra, size)

    def infer(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """The first output ``[B, ...]`` of the unmodified program, nothing captured."""
        size = self._check(batch)
        return self._runner.run(self._plain, batch, size, "a batch")[0].to(torch.float32)

    def _check(self, batch: Batch) -> int:
        size = batch_size(batch, self._runner.inputs)
        check_sample_shapes(batch, self._sample_shapes)
        return size


def _per_sample(candidates: Sequence[FxCandidate], graph: fx.Graph, inputs: Sequence[InputSpec]) -> list[int]:
    """Positions of the candidates whose input depends on the model's inputs (an activation of
    weights alone is no layer)."""
    reached = input_dependent(graph, {spec.name for spec in inputs})
    return [k for k, c in enumerate(candidates) if c.node in reached]


def _shapes(
    runner: _Runner, capturing: fx.GraphModule, example: Batch, size: int, count: int
) -> list[tuple[int, ...] | None]:
    """Per candidate, its per-sample shape when it ran on ``[B, ...]`` float tensors with the same
    shape before and after at batch sizes B and 2B, else None."""
    runs = []
    for batch, rows in ((example, size), (doubled(example, runner.inputs), 2 * size)):
        _, *extra = runner.run(capturing, batch, rows, "the example batch")
        runs.append((extra, rows))
    shapes: list[tuple[int, ...] | None] = []
    for k in range(count):
        seen = set()
        for extra, rows in runs:
            pre, post = extra[2 * k], extra[2 * k + 1]
            fits = pre.shape == post.shape and pre.dim() > 0 and pre.shape[0] == rows
            seen.add(tuple(int(d) for d in pre.shape[1:]) if fits and pre.is_floating_point() else None)
        shape = seen.pop() if len(seen) == 1 else None
        shapes.append(shape)
    return shapes


def _enclosing(node: fx.Node) -> set[str]:
    """Every module path of ``node.meta["nn_module_stack"]`` (a repeated call's ``@k`` left out)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = (str(path).split("@", 1)[0] for path, _ in stack.values())
    return {path for path in paths if path}


def graph_index(program: torch.export.ExportedProgram) -> GraphIndex[fx.Node]:
    """The module outputs (by ``nn_module_stack``) and the user inputs and nodes by name, for
    capture points."""
    graph = program.graph
    nodes = [
        GraphNode([node], node.all_input_nodes, _enclosing(node), node.name)
        for node in graph.nodes
        if node.op == "call_function"
    ]
    returned = next(n for n in graph.nodes if n.op == "output").all_input_nodes
    user = {node: node.name for node in _user_placeholders(program)}
    return index_graph(nodes, returned, user)


def _capture_candidates(
    program: torch.export.ExportedProgram, points: Sequence[CapturePoint], path: Path
) -> list[FxCandidate]:
    """A candidate per capture point, its node both before and after."""
    if not points:
        return []
    nodes = resolve_points(points, graph_index(program), f"exported program {path.name}")
    return [
        FxCandidate(node, CAPTURE_OP_TYPE, CAPTURE_OP_TYPE, module_path(node), node, tuple(point.breakpoints))
        for point, node in zip(points, nodes, strict=True)
    ]


def load_exported(
    path: Path,
    *,
    device: str,
    layer_names: Sequence[str] | None,
    example: Example,
    capture_points: Sequence[CapturePoint] = (),
) -> ExportedCaptureModel:
    """Open a ``.pt2`` archive and discover its activation layers on ``example`` (``[B, ...]`` per
    input name), the ``capture_points`` layers after them.

    Raises ``AnalysisError`` with ``model_invalid``, ``model_unsupported``,
    ``dataset_shape_mismatch``, ``out_of_memory``, ``model_runtime_error``, ``no_activation_layers``,
    ``unknown_layer``, ``unknown_tensor`` or ``device_unavailable``.
    """
    target = torch_device(device)
    program = load_program(path, target)
    runner = _Runner(program, target)
    example = example_for(example, runner.inputs)
    size = batch_size(example, runner.inputs)
    module = program.graph_module
    candidates = find_activations(module.graph)
    if not candidates and not capture_points:
        raise AnalysisError(
            f"expected at least one activation (aten.relu, sigmoid, gelu, ...) in {path.name}'s graph, "
            "found none",
            code="no_activation_layers",
        )
    candidates = [candidates[k] for k in _per_sample(candidates, module.graph, runner.inputs)]
    points = _capture_candidates(program, capture_points, path)
    reached = input_dependent(module.graph, {spec.name for spec in runner.inputs})
    sites = [site for site in find_recurrent(module.graph) if site.node in reached]
    everything = _with_outputs(module, [*_exposed([*candidates, *points]), *_site_nodes(sites)])
    shapes = _shapes(runner, everything, example, size, len(candidates) + len(points))
    kept = [(c, s) for c, s in zip(candidates, shapes[: len(candidates)], strict=True) if s is not None]
    point_shapes = [check_shape(p, s) for p, s in zip(capture_points, shapes[len(candidates) :], strict=True)]
    all_gates = _Gates(sites, [list(range(len(site.gates))) for site in sites])
    gate_layers = all_gates.layers(runner, everything, example, size, 2 * (len(candidates) + len(points)))
    if not kept and not points:
        raise AnalysisError(
            f"expected at least one activation on per-sample float tensors in {path.name}; the activations "
            "found act on weights only",
            code="no_activation_layers",
        )
    names = module_layer_names([c.path for c, _ in kept], [c.op_type for c, _ in kept])
    names += capture_names(capture_points, [*names, *(layer.name for layer in gate_layers)])
    kept += zip(points, point_shapes, strict=True)
    layers = [
        ActivationLayer(name, c.op_type, shape, c.default_breakpoints, c.params)
        for name, (c, shape) in zip(names, kept, strict=True)
    ]
    keep = selected_positions([*names, *(layer.name for layer in gate_layers)], layer_names)
    chosen = [kept[i][0] for i in keep if i < len(kept)]
    gates = all_gates.selected([i - len(kept) for i in keep if i >= len(kept)])
    exposed = [*_exposed(chosen), *_site_nodes(gates.sites)]
    model = ExportedCaptureModel(
        runner=runner,
        plain=module,
        capturing=_with_outputs(module, exposed),
        layers=[[*layers, *gate_layers][i] for i in keep],
        sample_shapes={s.name: tuple(int(d) for d in example[s.name].shape[1:]) for s in runner.inputs},
        embedding=_embedding(module, runner, exposed),
        gates=gates,
    )
    analysed = {site.node for site in sites}
    model.warnings = [
        recurrent_warning(ATEN_RECURRENT[op], module_path(node))
        for node in module.graph.nodes
        if (op := aten_name(node)) is not None and op in ATEN_RECURRENT and node not in analysed
    ]
    return model


def _site_nodes(sites: Sequence[RecurrentSite]) -> list[fx.Node]:
    return [node for site in sites for node in site.exposed]


@dataclass(frozen=True)
class _Gates:
    """The analysed recurrent ops: ``sites`` and the gate indices (into each site's ``gates``)
    kept per site."""

    sites: list[RecurrentSite]
    kept: list[list[int]]

    @property
    def count(self) -> int:
        return sum(len(kept) for kept in self.kept)

    def names(self, site: int) -> list[str]:
        base = self.sites[site].path or f"{self.sites[site].op}#{site}"
        return [f"{base}:{gate}" for gate, _ in self.sites[site].gates]

    def values(
        self, exposed: list[torch.Tensor], weights: Mapping[str, object]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(pre, post)`` ``[B, T, H]`` of each kept gate, from the sites' exposed values."""
        found = []
        start = 0
        for site, kept in zip(self.sites, self.kept, strict=True):
            params = [p for p in (weights[name] for name in site.params) if isinstance(p, torch.Tensor)]
            stop = start + len(site.exposed)
            gates = stacked_gates(
                site.op, exposed[start:stop], params, site.batch_first, site.layers, site.directions
            )
            found += [gates[g] for g in kept]
            start = stop
        return found

    def layers(
        self, runner: _Runner, module: fx.GraphModule, example: Batch, size: int, offset: int
    ) -> list[ActivationLayer]:
        """Every gate of every site as a layer, its shape from the example batch."""
        if not self.sites:
            return []
        _, *extra = runner.run(module, example, size, "the example batch")
        values = iter(self.values(extra[offset:], runner.values))
        made = []
        for k, (site, kept) in enumerate(zip(self.sites, self.kept, strict=True)):
            for gate in kept:
                pre, _ = next(values)
                shape = tuple(int(d) for d in pre.shape[1:])
                made.append(ActivationLayer(self.names(k)[gate], site.gates[gate][1], shape))
        return made

    def selected(self, positions: Sequence[int]) -> _Gates:
        """The sites and gates at ``positions`` (indices into every kept gate of every site, in
        order)."""
        flat = [(k, gate) for k, kept in enumerate(self.kept) for gate in kept]
        per_site: dict[int, list[int]] = {}
        for position in positions:
            site, gate = flat[position]
            per_site.setdefault(site, []).append(gate)
        order = sorted(per_site)
        return _Gates([self.sites[k] for k in order], [per_site[k] for k in order])


@dataclass(frozen=True)
class _Embedding:
    """The program cut at its embedding: ``head`` returns the embedding tensors after the
    outputs, ``capturing`` the tail with the layers' inputs and outputs appended."""

    cut: EmbeddingCut
    head: fx.GraphModule
    capturing: fx.GraphModule


def _embedding(module: fx.GraphModule, runner: _Runner, exposed: Sequence[fx.Node]) -> _Embedding | None:
    """The cut below the integer user inputs, when they have one and every chosen layer lies
    below it."""
    integer = {s.name for s in runner.inputs if not _torch_dtype(s.dtype).is_floating_point}
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder" and n.name in integer]
    if not placeholders:
        return None
    value = placeholders[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return None
    cut = find_cut(module, integer, value.shape[0])
    if cut is None or any(node not in cut.mapping for node in exposed):
        return None
    capturing = _with_outputs(cut.tail, [cut.mapping[node] for node in exposed])
    return _Embedding(cut, _with_outputs(module, cut.frontier), capturing)


def _torch_dtype(name: str) -> torch.dtype:
    found = getattr(torch, name, None)
    return found if isinstance(found, torch.dtype) else torch.float32


def _exposed(candidates: Sequence[FxCandidate]) -> list[fx.Node]:
    """Each candidate's input node and output node, in that order."""
    nodes: list[fx.Node] = []
    for candidate in candidates:
        nodes += [candidate.pre, candidate.node]
    return nodes
