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

from worker.engine.capture.base import (
    ActivationLayer,
    CaptureResult,
    InputSpec,
    ModelFormat,
    selected_positions,
)
from worker.engine.capture.batch import Batch, as_tensor, batch_size, check_sample_shapes, doubled
from worker.engine.capture.device import torch_device
from worker.engine.capture.record import Recorder
from worker.engine.capture.run_errors import out_of_memory, run_failure
from worker.engine.capture.torchscript_graph import (
    Exposure,
    candidate_names,
    copy_flags,
    expose,
    find_activations,
    inlined_graph,
    recurrent_layers,
)
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


def _build(module: torch.jit.ScriptModule, indices: Sequence[int], flags: list[tuple[bool, bool]]) -> _Plan:
    """Compile ``forward`` with records around the candidates at ``indices`` (in graph order);
    ``flags`` holds every candidate's ``copy_flags``."""
    graph = inlined_graph(module)
    split_halving_max_pools(graph)
    candidates = find_activations(graph)
    recorder = Recorder(2 * len(indices))
    exposure = expose(graph, [candidates[i] for i in indices], recorder.id, [flags[i] for i in indices])
    function = torch._C._create_function_from_graph(f"neuronscope_capture_{recorder.id}", graph)
    return _Plan(function, recorder, exposure)


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

    def _shapes(self, batch: Batch) -> dict[str, tuple[int, ...]]:
        return {spec.name: tuple(batch[spec.name].shape) for spec in self.inputs}

    def arguments(self, batch: Batch) -> list[Any]:
        tensors = [as_tensor(batch[spec.name], self.device, self.float_dtype) for spec in self.inputs]
        return [*tensors, *self.defaults]

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
            piece = {spec.name: _pad(batch[spec.name][start:stop], chunk) for spec in self.inputs}
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
    ) -> None:
        self.inputs = runner.inputs
        self.layers = layers
        self.device = runner.device
        self.runtime = f"torch.jit {torch.__version__} {runner.device}"
        self.warnings: list[str] = []
        self._runner = runner
        self._plan = plan
        self._fires = fires
        self._sample_shapes = sample_shapes

    def capture(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """Run ``batch`` (``[B, ...]`` per input name) and return the first output ``[B, ...]`` and
        ``pre[k]`` / ``post[k]`` ``[B, neurons_k]`` float32 for every layer."""
        size = self._check(batch)
        raw, values = self._runner.recorded_chunks(self._plan, batch)
        pre: list[torch.Tensor] = []
        post: list[torch.Tensor] = []
        for k, layer in enumerate(self.layers):
            for slot, into in ((2 * k, pre), (2 * k + 1, post)):
                if len(values[slot]) != self._fires[k]:
                    raise AnalysisError(
                        f"layer {layer.name!r} ran {len(values[slot])} times for this batch but "
                        f"{self._fires[k]} times for the example batch; data-dependent control flow "
                        "is not supported",
                        code="model_unsupported",
                    )
                into.append(_flatten(values[slot], size))
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
    runner: _Runner, example: Batch, size: int, flags: list[tuple[bool, bool]]
) -> tuple[list[int], list[ActivationLayer], list[int]]:
    """Run the example, and the example twice over, with every candidate recorded; keep the
    activations that ran on float ``[B, ...]`` tensors with the same shape before and after, as
    many times in both runs. Returns the kept candidates' graph indices, their layers and how many
    times each ran per call (more than once inside a loop)."""
    candidates = find_activations(inlined_graph(runner.module))
    names = candidate_names(candidates, *_module_names(runner.module))
    plan = _build(runner.module, range(len(candidates)), flags)
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
            )
        )
        fires.append(count)
    return indices, layers, fires


def load_torchscript(
    path: Path,
    *,
    device: str,
    layer_names: Sequence[str] | None,
    example: Mapping[str, np.ndarray],
) -> TorchScriptCaptureModel:
    """Open a TorchScript archive and discover its activation layers on ``example`` (``[B, ...]``
    per input name).

    Raises ``AnalysisError`` with ``model_invalid``, ``dataset_shape_mismatch``, ``out_of_memory``,
    ``model_runtime_error``, ``no_activation_layers``, ``unknown_layer`` or ``device_unavailable``.
    """
    target = torch_device(device)
    module = load_script(path, target)
    declared = script_inputs(module)
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
    if not find_activations(inlined_graph(module)):
        raise AnalysisError(
            f"expected at least one activation (aten::relu, sigmoid, gelu, ...) in {path.name}'s forward, "
            "found none",
            code="no_activation_layers",
        )
    flags = copy_flags(inlined_graph(module))
    try:
        indices, layers, fires = _discover(runner, example, size, flags)
    except AnalysisError as exc:
        if exc.code not in ("dataset_shape_mismatch", "model_runtime_error"):
            raise
        # A trace on one sample may have baked a batch of 1 into its views: run one at a time.
        runner = replace(runner, fixed_batch=1)
        try:
            indices, layers, fires = _discover(runner, example, size, flags)
        except AnalysisError:
            raise exc from None
    if not layers:
        raise AnalysisError(
            f"expected at least one activation on per-sample float tensors in {path.name}; the activations "
            "found did not run on the example batch or act on weights only",
            code="no_activation_layers",
        )
    keep = selected_positions([layer.name for layer in layers], layer_names)
    indices, layers, fires = [indices[i] for i in keep], [layers[i] for i in keep], [fires[i] for i in keep]
    model = TorchScriptCaptureModel(
        runner=runner,
        plan=_build(module, indices, flags),
        layers=layers,
        fires=fires,
        sample_shapes={spec.name: tuple(int(d) for d in example[spec.name].shape[1:]) for spec in declared},
    )
    model.warnings = recurrent_layers(inlined_graph(module), *_module_names(module))
    return model
