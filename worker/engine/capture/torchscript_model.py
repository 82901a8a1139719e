"""TorchScript front end: the module's inlined forward graph, rewritten so every selected
activation hands over its input and output (``torchscript_graph.expose``) and with exact speedups
applied (``torchscript_speedups``), runs as one TorchScript function per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuronscope.contracts.config import CapturePoint
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
from worker.engine.capture.capture_points import check_shape
from worker.engine.capture.capture_points import layer_names as capture_names
from worker.engine.capture.device import torch_device
from worker.engine.capture.record import Recorder
from worker.engine.capture.recurrent_gates import stacked_gates
from worker.engine.capture.run_errors import out_of_memory, run_failure
from worker.engine.capture.torchscript_embedding import (
    Place,
    TsCut,
    cut_graph,
    find_cut,
    reached_tensors,
    value_at,
)
from worker.engine.capture.torchscript_graph import (
    Exposure,
    TsCandidate,
    candidate_names,
    capture_candidates,
    capture_flags,
    copy_flags,
    expose,
    find_activations,
    inlined_graph,
)
from worker.engine.capture.torchscript_recurrent import TsSite, find_sites, unanalysed_warnings
from worker.engine.capture.torchscript_speedups import split_halving_max_pools
from worker.engine.errors import AnalysisError

_DTYPES = {
    "Float": "float32",
    "Double": "float64",
    "Half": "float16",
    "Long": "int64",
    "Int": "int32",
    "Bool": "bool",
}


def load_script(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """``torch.jit.load`` in eval mode; ``AnalysisError(code="model_invalid")`` when it fails."""
    jit_load: Any = torch.jit.load
    try:
        module: torch.jit.ScriptModule = jit_load(str(path), map_location=device)
    except Exception as exc:
        if (memory := out_of_memory(exc, "loading the model")) is not None:
            raise memory from exc
        raise AnalysisError(
            f"expected a TorchScript archive (torch.jit.save of a scripted or traced module) in {path.name}, "
            f"torch.jit.load failed: {exc}",
            code="model_invalid",
        ) from exc
    module.eval()
    return module


def _arguments(module: torch.jit.ScriptModule) -> list[Any]:
    """``forward``'s schema arguments after ``self`` (whatever the module calls it)."""
    forward: Any = module.forward
    return list(forward.schema.arguments)[1:]


def script_inputs(module: torch.jit.ScriptModule) -> list[InputSpec]:
    """Inputs from ``forward``'s schema: the arguments after ``self`` that have no default.

    Shapes are unknown (``()``); the dtype is the traced one when the graph records it,
    ``"int64"`` for an input used as the indices of an embedding (a saved archive keeps no traced
    dtypes), else ``"float32"``. Raises ``AnalysisError(code="model_unsupported")`` for a required
    argument that is not a tensor.
    """
    forward: Any = module.forward
    graph_inputs = list(forward.graph.inputs())[1:]
    indices = _index_inputs(module)
    specs = []
    for position, (argument, value) in enumerate(zip(_arguments(module), graph_inputs, strict=False)):
        if argument.has_default_value():
            continue
        if not argument.type.isSubtypeOf(torch._C.TensorType.get()):
            raise AnalysisError(
                f"expected forward's arguments without defaults to be tensors, got {argument.name}: "
                f"{argument.type}",
                code="model_unsupported",
            )
        scalar = value.type().scalarType() if isinstance(value.type(), torch._C.TensorType) else None
        if scalar is None and position in indices:
            scalar = "Long"
        specs.append(InputSpec(argument.name, (), _DTYPES.get(scalar or "Float", "float32")))
    return specs


#: Ops whose argument at the given position is integer indices.
_INDEX_ARGUMENTS = {"aten::embedding": 1, "aten::embedding_bag": 1, "aten::one_hot": 0}


def _index_inputs(module: torch.jit.ScriptModule) -> set[int]:
    """Positions (after ``self``) of ``forward``'s inputs that some op of the inlined graph reads
    as integer indices (an embedding's token ids)."""
    graph = inlined_graph(module)
    found = set()
    for position, value in enumerate(list(graph.inputs())[1:]):
        if any(_INDEX_ARGUMENTS.get(use.user.kind()) == use.offset for use in value.uses()):
            found.add(position)
    return found


def _first_tensor(value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    for item in items:
        try:
            return _first_tensor(item)
        except AnalysisError:
            continue
    raise AnalysisError(
        "expected the model to return a tensor (or a tuple / list / dict holding one), "
        f"got {type(value).__name__}",
        code="model_unsupported",
    )


@dataclass(frozen=True)
class _Plan:
    """The rewritten forward: ``function(module, *args)``, handing over layer k's input and output
    as slots 2k and 2k + 1 (extra outputs or recorder slots, as ``exposure`` says)."""

    function: Any
    recorder: Recorder
    exposure: Exposure


def _candidates(
    graph: torch._C.Graph, module: torch.jit.ScriptModule, points: Sequence[CapturePoint]
) -> list[TsCandidate]:
    """The activations of ``graph`` (``module``'s inlined forward) in graph order, then one
    candidate per capture point."""
    where = "the TorchScript module's forward"
    return [*find_activations(graph), *capture_candidates(graph, points, *_module_names(module), where)]


def _flags(module: torch.jit.ScriptModule, points: Sequence[CapturePoint]) -> list[tuple[bool, bool]]:
    """``copy_flags`` of every activation, then ``capture_flags`` of every capture point."""
    graph = inlined_graph(module)
    where = "the TorchScript module's forward"
    captured = capture_candidates(graph, points, *_module_names(module), where)
    return [*copy_flags(graph), *capture_flags(graph, captured)]


def _build(
    module: torch.jit.ScriptModule,
    indices: Sequence[int],
    flags: list[tuple[bool, bool]],
    points: Sequence[CapturePoint] = (),
    frontier: list[Place] | None = None,
    sites: Sequence[TsSite] = (),
) -> _Plan:
    """Compile ``forward`` with records around the candidates at ``indices`` (in graph order, the
    capture points after the activations), then each recurrent site's values (one slot pair per
    value: ``TsSite.values``); ``flags`` holds every candidate's copy flags. With a ``frontier``,
    the graph is cut there: each frontier value becomes an argument after the module's own
    (``torchscript_embedding``)."""
    graph = inlined_graph(module)
    if frontier is not None:
        cut_graph(graph, frontier)
    site_values = [value for site in sites for value in site.values(graph)]
    split_halving_max_pools(graph)
    candidates = _candidates(graph, module, points)
    recorded = [TsCandidate(v.node(), "value", "value", False, "", point=v) for v in site_values]
    return _compile(
        graph,
        [*(candidates[i] for i in indices), *recorded],
        [*(flags[i] for i in indices), *capture_flags(graph, recorded)],
    )


def _compile(graph: torch._C.Graph, candidates: list[TsCandidate], flags: list[tuple[bool, bool]]) -> _Plan:
    recorder = Recorder(2 * len(candidates))
    exposure = expose(graph, candidates, recorder.id, flags)
    function = torch._C._create_function_from_graph(f"neuronscope_capture_{recorder.id}", graph)
    return _Plan(function, recorder, exposure)


def _probe(module: torch.jit.ScriptModule, places: Sequence[Place]) -> _Plan:
    """``forward`` handing over the values at ``places`` (each twice: slots 2k and 2k + 1), copied
    where a later in-place op may overwrite them."""
    graph = inlined_graph(module)
    values = [value_at(graph, place) for place in places]
    candidates = [TsCandidate(v.node(), "value", "value", False, "", point=v) for v in values]
    return _compile(graph, candidates, capture_flags(graph, candidates))


@dataclass(frozen=True)
class _Runner:
    """Turns batches into ``forward``'s arguments and runs the module or a recording plan."""

    module: torch.jit.ScriptModule
    inputs: list[InputSpec]
    defaults: list[Any]
    device: torch.device
    float_dtype: torch.dtype
    #: Set for a module that runs only on batches of this size (a trace that baked its example's
    #: batch size into a view): batches then run in chunks of it, the last padded.
    fixed_batch: int | None = None
    #: Batch keys passed after the defaults: a cut graph's embedded tensors.
    extra: tuple[str, ...] = ()

    def _shapes(self, batch: Batch) -> dict[str, tuple[int, ...]]:
        return {name: tuple(batch[name].shape) for name in self._names()}

    def _names(self) -> list[str]:
        return [*(spec.name for spec in self.inputs), *self.extra]

    def arguments(self, batch: Batch) -> list[Any]:
        tensors = [as_tensor(batch[spec.name], self.device, self.float_dtype) for spec in self.inputs]
        extra = [as_tensor(batch[name], self.device, self.float_dtype) for name in self.extra]
        return [*tensors, *self.defaults, *extra]

    def chunks(self, batch: Batch) -> list[tuple[int, Batch]]:
        """``(rows, piece)`` per run: the whole batch, or chunks of ``fixed_batch`` padded by
        repeating the last sample (``rows`` of each piece are real)."""
        size = batch_size(batch, self.inputs)
        chunk = self.fixed_batch
        if chunk is None or chunk == size:
            return [(size, batch)]
        pieces: list[tuple[int, Batch]] = []
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            piece = {name: _pad(batch[name][start:stop], chunk) for name in self._names()}
            pieces.append((stop - start, piece))
        return pieces

    def plain_output(self, batch: Batch) -> torch.Tensor:
        """The module's first output ``[B, ...]``, run in chunks when the batch size is fixed."""
        parts = [_first_tensor(self.plain(piece))[:rows] for rows, piece in self.chunks(batch)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def recorded_chunks(
        self, plan: _Plan, batch: Batch, what: str = "a batch"
    ) -> tuple[object, list[list[torch.Tensor]]]:
        """:meth:`recorded`, run in chunks when the batch size is fixed: the first output and each
        slot's tensors concatenated over the chunks."""
        pieces = self.chunks(batch)
        if len(pieces) == 1 and pieces[0][1] is batch:
            return self.recorded(plan, batch, what)
        outputs: list[torch.Tensor] = []
        slots: list[list[list[torch.Tensor]]] = []
        for rows, piece in pieces:
            raw, values = self.recorded(plan, piece, what)
            outputs.append(_first_tensor(raw)[:rows])
            slots.append([[t[:rows] for t in fired] for fired in values])
        merged = []
        for per_chunk in zip(*slots, strict=True):
            if len({len(fired) for fired in per_chunk}) != 1:
                raise AnalysisError(
                    "an activation ran a different number of times for different chunks of a batch; "
                    "data-dependent control flow is not supported",
                    code="model_unsupported",
                )
            merged.append([torch.cat(parts) for parts in zip(*per_chunk, strict=True)])
        return torch.cat(outputs), merged

    def plain(self, batch: Batch) -> object:
        arguments = self.arguments(batch)
        try:
            with torch.inference_mode():
                return self.module(*arguments)
        except Exception as exc:
            raise run_failure(exc, "a batch", self._shapes(batch)) from exc

    def recorded(
        self, plan: _Plan, batch: Batch, what: str = "a batch"
    ) -> tuple[object, list[list[torch.Tensor]]]:
        """The module's raw output and, per slot, the tensors handed over in it (one per time the
        activation ran). A failure of the model is an ``AnalysisError`` naming its cause
        (``worker.engine.capture.run_errors``)."""
        plan.recorder.clear()
        try:
            arguments = self.arguments(batch)
            try:
                with torch.inference_mode():
                    raw = plan.function(self.module._c, *arguments)
            except Exception as exc:
                raise run_failure(exc, what, self._shapes(batch)) from exc
            if plan.exposure.extra:
                raw, *extra = raw
            values = [
                list(bucket) if index is None else [extra[index]]
                for bucket, index in zip(plan.recorder.values, plan.exposure.outputs, strict=True)
            ]
            return raw, values
        finally:
            plan.recorder.clear()


@dataclass(frozen=True)
class TsEmbedding:
    """The module cut at its embedding: ``head`` hands over the cut values, ``tail`` runs the
    layers from them, fed by ``runner`` (the cut values passed as its ``extra`` arguments)."""

    cut: TsCut
    head: _Plan
    tail: _Plan
    runner: _Runner


def _embedding(
    runner: _Runner,
    example: Batch,
    size: int,
    plan: tuple[list[int], list[tuple[bool, bool]], Sequence[CapturePoint], Sequence[TsSite]],
) -> TsEmbedding | None:
    """The cut below the integer inputs, when they have one; ``plan`` is what ``_build`` takes
    for the layers."""
    integer = [
        k + 1 for k, spec in enumerate(runner.inputs) if not np.issubdtype(np.dtype(spec.dtype), np.floating)
    ]
    if not integer:
        return None
    module = runner.module
    graph = inlined_graph(module)
    places = reached_tensors(graph, integer)
    if not places:
        return None
    probe = _probe(module, places)
    floats = set(places)
    for batch, rows in ((example, size), (doubled(example, runner.inputs), 2 * size)):
        _, values = runner.recorded_chunks(probe, batch, what="the example batch")
        for k, place in enumerate(places):
            fired = values[2 * k]
            if (
                len(fired) != 1
                or not fired[0].is_floating_point()
                or fired[0].dim() == 0
                or fired[0].shape[0] != rows
            ):
                floats.discard(place)
    cut = find_cut(graph, integer, floats, *_module_names(module))
    if cut is None:
        return None
    indices, flags, points, sites = plan
    try:
        tail = _build(module, indices, flags, points, cut.frontier, sites)
    except (AnalysisError, RuntimeError):
        return None
    extra = tuple(f"neuronscope_embedded_{k}" for k in range(len(cut.frontier)))
    return TsEmbedding(cut, _probe(module, cut.frontier), tail, replace(runner, extra=extra))


@dataclass(frozen=True)
class _Gates:
    """The analysed recurrent sites, the gate indices kept per site (into ``TsSite.gates``) and
    each site's weights."""

    sites: list[TsSite]
    kept: list[list[int]]
    weights: list[list[torch.Tensor]]

    @property
    def count(self) -> int:
        return sum(len(kept) for kept in self.kept)

    def values(self, slots: list[list[torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(pre, post)`` ``[B, T, H]`` of each kept gate, from the sites' slots (2 per value)."""
        found = []
        start = 0
        for site, kept, weights in zip(self.sites, self.kept, self.weights, strict=True):
            count = 3 + (site.op == "lstm")
            values = [slots[2 * (start + j)][0] for j in range(count)]
            gates = stacked_gates(site.op, values, weights, site.batch_first, site.layers, site.directions)
            found += [gates[g] for g in kept]
            start += count
        return found


def _site_names(sites: Sequence[TsSite]) -> list[list[str]]:
    return [
        [f"{site.path or f'{site.op}#{k}'}:{gate}" for gate, _ in site.gates] for k, site in enumerate(sites)
    ]


def _gate_layers(runner: _Runner, example: Batch, size: int, gates: _Gates) -> list[ActivationLayer]:
    """A layer per kept gate, its per-sample shape from the example batch."""
    if not gates.sites:
        return []
    plan = _build(runner.module, [], [], sites=gates.sites)
    _, slots = runner.recorded_chunks(plan, example, what="the example batch")
    values = iter(gates.values(slots))
    names = _site_names(gates.sites)
    layers = []
    for k, (site, kept) in enumerate(zip(gates.sites, gates.kept, strict=True)):
        for gate in kept:
            pre, _ = next(values)
            layers.append(
                ActivationLayer(names[k][gate], site.gates[gate][1], tuple(int(d) for d in pre.shape[1:]))
            )
    return layers


class TorchScriptCaptureModel:
    """A TorchScript module; see ``worker.engine.capture.base.CaptureModel``."""

    format: ModelFormat = "torchscript"

    def __init__(
        self,
        *,
        runner: _Runner,
        plan: _Plan,
        layers: list[ActivationLayer],
        fires: list[int],
        sample_shapes: dict[str, tuple[int, ...]],
        gates: _Gates | None = None,
    ) -> None:
        self.inputs = runner.inputs
        self._gates = gates or _Gates([], [], [])
        self.layers = layers
        self.device = runner.device
        self.runtime = f"torch.jit {torch.__version__} {runner.device}"
        self.warnings: list[str] = []
        self._runner = runner
        self._plan = plan
        self._fires = fires
        self._sample_shapes = sample_shapes
        self.embedding: TsEmbedding | None = None

    def capture(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """Run ``batch`` (``[B, ...]`` per input name) and return the first output ``[B, ...]`` and
        ``pre[k]`` / ``post[k]`` ``[B, neurons_k]`` float32 for every layer."""
        size = self._check(batch)
        return self._result(*self._runner.recorded_chunks(self._plan, batch), size)

    @property
    def embedding_names(self) -> list[str]:
        """The tensors transition density interpolates for integer inputs (``"<module>:<op>"``),
        keyed in :meth:`embed`'s result by :attr:`embedding_inputs`; empty when there are none."""
        return list(self.embedding.cut.names) if self.embedding is not None else []

    @property
    def embedding_inputs(self) -> list[str]:
        return list(self.embedding.runner.extra) if self.embedding is not None else []

    def embed(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding tensors ``[B, ...]`` of ``batch``, keyed by :attr:`embedding_inputs`."""
        if self.embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        self._check(batch)
        _, values = self._runner.recorded_chunks(self.embedding.head, batch, "the embedding of a batch")
        return {name: values[2 * k][0] for k, name in enumerate(self.embedding.runner.extra)}

    def capture_embedded(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """:meth:`capture` from the embedding: ``batch`` holds the model's inputs (integer ones
        are read only for what is not embedded) and every :attr:`embedding_inputs` tensor."""
        if self.embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        size = batch_size(batch, self.inputs)
        return self._result(*self.embedding.runner.recorded_chunks(self.embedding.tail, batch), size)

    def _result(self, raw: object, values: list[list[torch.Tensor]], size: int) -> CaptureResult:
        pre: list[torch.Tensor] = []
        post: list[torch.Tensor] = []
        plain = len(self.layers) - self._gates.count
        for k, layer in enumerate(self.layers[:plain]):
            for slot, into in ((2 * k, pre), (2 * k + 1, post)):
                if len(values[slot]) != self._fires[k]:
                    raise AnalysisError(
                        f"layer {layer.name!r} ran {len(values[slot])} times for this batch but "
                        f"{self._fires[k]} times for the example batch; data-dependent control flow "
                        "is not supported",
                        code="model_unsupported",
                    )
                into.append(_flatten(values[slot], size))
        for gate_pre, gate_post in self._gates.values(values[2 * plain :]):
            pre.append(gate_pre.reshape(size, -1).to(torch.float32))
            post.append(gate_post.reshape(size, -1).to(torch.float32))
        return CaptureResult(outputs=_first_tensor(raw).to(torch.float32), pre=pre, post=post)

    def infer(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """The first output ``[B, ...]`` of the unmodified module, nothing captured."""
        self._check(batch)
        return self._runner.plain_output(batch).to(torch.float32)

    def _check(self, batch: Batch) -> int:
        size = batch_size(batch, self.inputs)
        check_sample_shapes(batch, self._sample_shapes)
        return size


def _pad(array: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """``array`` ``[n, ...]`` padded to ``[size, ...]`` by repeating its last sample."""
    if array.shape[0] == size:
        return array
    if isinstance(array, torch.Tensor):
        return torch.cat([array, array[-1:].expand(size - array.shape[0], *array.shape[1:])])
    return np.concatenate([array, np.repeat(array[-1:], size - array.shape[0], axis=0)])


def _module_names(module: torch.jit.ScriptModule) -> tuple[set[str], set[str]]:
    """The qualified names of ``module``'s submodules (``"encoder.layer.0"``), and of those that
    are containers without a forward (ModuleList, ModuleDict)."""
    names, containers = set(), set()
    for name, child in module.named_modules():
        if name:
            names.add(name)
            if getattr(child, "original_name", "") in ("ModuleList", "ModuleDict"):
                containers.add(name)
    return names, containers


def _flatten(recorded: list[torch.Tensor], size: int) -> torch.Tensor:
    """One layer's recorded tensors ``[B, ...]`` (one per time it ran) as ``[B, neurons]`` float32."""
    parts = [t.reshape(size, -1) for t in recorded]
    flat = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return flat.to(torch.float32)


def _per_sample_shape(pre: list[torch.Tensor], post: list[torch.Tensor], size: int) -> tuple[int, ...] | None:
    """The per-sample shape of one layer's recorded float ``[size, ...]`` tensors, else None."""
    seen = {tuple(t.shape) for t in [*pre, *post]}
    if not pre or len(pre) != len(post) or len(seen) != 1:
        return None
    shape = seen.pop()
    if not all(t.is_floating_point() for t in pre) or not shape or shape[0] != size:
        return None
    return tuple(int(d) for d in shape[1:])


def _unoptimized() -> Any:
    """``torch.jit.optimized_execution(False)``: graphs run without the executor's profiling and
    optimisation passes."""
    optimized_execution: Any = getattr(torch.jit, "optimized_execution")  # noqa: B009 - not re-exported
    return optimized_execution(False)


def _discover(
    runner: _Runner,
    example: Batch,
    size: int,
    flags: list[tuple[bool, bool]],
    points: Sequence[CapturePoint] = (),
) -> tuple[list[int], list[ActivationLayer], list[int]]:
    """Run the example, and the example twice over, with every candidate recorded; keep the
    activations that ran on float ``[B, ...]`` tensors with the same shape before and after, as
    many times in both runs, and every capture point (an error where its tensor is not such).
    Returns the kept candidates' graph indices, their layers and how many times each ran per call
    (more than once inside a loop)."""
    candidates = _candidates(inlined_graph(runner.module), runner.module, points)
    activations = candidates[: len(candidates) - len(points)]
    names = candidate_names(activations, *_module_names(runner.module))
    names += capture_names(points, names)
    plan = _build(runner.module, range(len(candidates)), flags, points)
    runs: list[tuple[list[list[torch.Tensor]], int]] = []
    for batch, rows in ((example, size), (doubled(example, runner.inputs), 2 * size)):
        # The discovery plan runs twice and is dropped: the graph executor's profiling and
        # optimisation of the whole inlined graph (seconds on a large one) would be wasted on it.
        with _unoptimized():
            _, values = runner.recorded_chunks(plan, batch, what="the example batch")
        runs.append((values, rows))
    indices: list[int] = []
    layers: list[ActivationLayer] = []
    fires: list[int] = []
    for k, (candidate, name) in enumerate(zip(candidates, names, strict=True)):
        per_run = {_per_sample_shape(values[2 * k], values[2 * k + 1], rows) for values, rows in runs}
        counts = {len(values[2 * k]) for values, _ in runs}
        per_sample = per_run.pop() if len(per_run) == 1 and len(counts) == 1 else None
        if k >= len(activations):
            per_sample = check_shape(points[k - len(activations)], per_sample)
        if per_sample is None:
            continue
        count = counts.pop()
        indices.append(k)
        layers.append(
            ActivationLayer(
                name,
                candidate.op_type,
                per_sample if count == 1 else (count, *per_sample),
                candidate.default_breakpoints,
                candidate.params,
            )
        )
        fires.append(count)
    return indices, layers, fires


def load_torchscript(
    path: Path,
    *,
    device: str,
    layer_names: Sequence[str] | None,
    example: Example,
    capture_points: Sequence[CapturePoint] = (),
) -> TorchScriptCaptureModel:
    """Open a TorchScript archive and discover its activation layers on ``example`` (``[B, ...]``
    per input name), the ``capture_points`` layers after them.

    Raises ``AnalysisError`` with ``model_invalid``, ``dataset_shape_mismatch``, ``out_of_memory``,
    ``model_runtime_error``, ``no_activation_layers``, ``unknown_layer``, ``unknown_tensor`` or
    ``device_unavailable``.
    """
    target = torch_device(device)
    module = load_script(path, target)
    declared = script_inputs(module)
    example = example_for(example, declared)
    size = batch_size(example, declared)
    floating = [p for p in module.parameters() if p.is_floating_point()]
    float_dtype = floating[0].dtype if floating else torch.float32
    inputs = []
    for spec in declared:
        dtype = np.asarray(example[spec.name]).dtype
        fed = str(float_dtype).removeprefix("torch.") if np.issubdtype(dtype, np.floating) else dtype.name
        inputs.append(InputSpec(spec.name, (None, *example[spec.name].shape[1:]), fed))
    runner = _Runner(
        module=module,
        inputs=inputs,
        defaults=[a.default_value for a in _arguments(module) if a.has_default_value()],
        device=target,
        float_dtype=float_dtype,
    )
    if not find_activations(inlined_graph(module)) and not capture_points:
        raise AnalysisError(
            f"expected at least one activation (aten::relu, sigmoid, gelu, ...) in {path.name}'s forward, "
            "found none",
            code="no_activation_layers",
        )
    flags = _flags(module, capture_points)
    try:
        indices, layers, fires = _discover(runner, example, size, flags, capture_points)
    except AnalysisError as exc:
        if exc.code not in ("dataset_shape_mismatch", "model_runtime_error"):
            raise
        # A trace on one sample may have baked a batch of 1 into its views: run one at a time.
        runner = replace(runner, fixed_batch=1)
        try:
            indices, layers, fires = _discover(runner, example, size, flags, capture_points)
        except AnalysisError:
            raise exc from None
    if not layers:
        raise AnalysisError(
            f"expected at least one activation on per-sample float tensors in {path.name}; the activations "
            "found did not run on the example batch or act on weights only",
            code="no_activation_layers",
        )
    names = _module_names(module)
    sites = find_sites(inlined_graph(module), module, *names)
    every = _Gates(
        sites, [list(range(len(site.gates))) for site in sites], [site.parameters(module) for site in sites]
    )
    gate_layers = _gate_layers(runner, example, size, every)
    keep = selected_positions(
        [*(layer.name for layer in layers), *(layer.name for layer in gate_layers)], layer_names
    )
    plain = [i for i in keep if i < len(layers)]
    flat = [(k, gate) for k, kept in enumerate(every.kept) for gate in kept]
    per_site: dict[int, list[int]] = {}
    for position in keep[len(plain) :]:
        site, gate = flat[position - len(layers)]
        per_site.setdefault(site, []).append(gate)
    order = sorted(per_site)
    gates = _Gates([sites[k] for k in order], [per_site[k] for k in order], [every.weights[k] for k in order])
    chosen = [*(layers[i] for i in plain), *(gate_layers[i - len(layers)] for i in keep[len(plain) :])]
    indices, fires = [indices[i] for i in plain], [fires[i] for i in plain]
    model = TorchScriptCaptureModel(
        runner=runner,
        plan=_build(module, indices, flags, capture_points, sites=gates.sites),
        layers=chosen,
        fires=fires,
        sample_shapes={spec.name: tuple(int(d) for d in example[spec.name].shape[1:]) for spec in declared},
        gates=gates,
    )
    model.embedding = _embedding(runner, example, size, (indices, flags, capture_points, gates.sites))
    model.warnings = unanalysed_warnings(inlined_graph(module), every.sites, *names)
    return model
