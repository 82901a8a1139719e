"""ONNX front end: onnxruntime runs an in-memory copy of the model whose graph also outputs every
selected activation's input and output tensors, so one ``run`` captures all layers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch

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
from worker.engine.capture.batch import (
    Batch,
    as_numpy,
    batch_size,
    check_declared_shapes,
    check_sample_shapes,
    doubled,
)
from worker.engine.capture.capture_points import (
    GraphIndex,
    GraphNode,
    check_shape,
    index_graph,
    resolve_points,
)
from worker.engine.capture.capture_points import (
    layer_names as _capture_names,
)
from worker.engine.capture.device import OrtPlacement, ort_placement
from worker.engine.capture.naming import module_layer_names, scope_modules, scope_path
from worker.engine.capture.onnx_control_flow import batch_axis_warnings, control_flow_warnings
from worker.engine.capture.onnx_embedding import OnnxCut, find_cut, reached_from
from worker.engine.capture.onnx_graph import Candidate, find_activations
from worker.engine.capture.onnx_recurrent import OnnxSite, find_sites
from worker.engine.capture.recurrent import ONNX_RECURRENT, recurrent_warning
from worker.engine.capture.run_errors import out_of_memory, run_failure
from worker.engine.errors import AnalysisError


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


ExternalData = Literal["reject", "load", "ignore"]


def load_proto(path: Path, *, external_data: ExternalData = "reject") -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model; ``AnalysisError(code="model_invalid")`` when it is not one.

    Tensors stored as external data are refused (``model_external_data``) unless ``external_data``
    is ``"load"`` (read from the model's directory: only for a model the caller trusts, such as a
    local file given to the CLI) or ``"ignore"`` (left unloaded, for reading the inputs alone).
    """
    try:
        proto = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:
        if (memory := out_of_memory(exc, "loading the model")) is not None:
            raise memory from exc
        raise AnalysisError(
            f"expected an ONNX model (protobuf ModelProto) in {path.name}, could not parse it: {exc}",
            code="model_invalid",
        ) from exc
    if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
        raise AnalysisError(
            f"expected an ONNX model with an IR version, nodes and outputs in {path.name}, got "
            f"ir_version={proto.ir_version}, {len(proto.graph.node)} nodes, "
            f"{len(proto.graph.output)} outputs",
            code="model_invalid",
        )
    if external_data == "ignore" or not any(
        i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer
    ):
        return proto
    if external_data == "load":
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise AnalysisError(
                f"expected the external weight files of {path.name} next to it, could not read them: {exc}",
                code="model_invalid",
            ) from exc
    else:
        raise AnalysisError(
            f"expected every weight of {path.name} inside the model file, got tensors stored as external "
            "data (a model file must not make the engine open other paths)",
            code="model_external_data",
        )
    return proto


def _dim(dim: Any) -> int | str | None:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    if dim.HasField("dim_param"):
        return str(dim.dim_param)
    return None


def onnx_inputs(proto: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are fed at run time (initializers listed as inputs excluded)."""
    initializers = {init.name for init in proto.graph.initializer}
    specs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        elem = tensor.elem_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"
        shape = tuple(_dim(d) for d in tensor.shape.dim) if tensor.HasField("shape") else ()
        specs.append(InputSpec(value.name, shape, dtype))
    return specs


@dataclass(frozen=True)
class _Slot:
    """Where a layer's value comes from: output ``index`` of the capture session, the feed, or
    (post-activations only) ``derive`` applied to the layer's pre-activation."""

    index: int | None
    feed: str | None = None
    derive: Callable[[torch.Tensor], torch.Tensor] | None = None


def _post_from_pre(candidate: Candidate) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The exact torch twin of a piecewise-linear activation, so its output need not leave the
    session: exposing a convolution's activated output costs a layout conversion, and exposing its
    input already prevents fusing the activation into the convolution."""
    node = candidate.anchor
    if node.op_type == "Relu":
        return _clamp(0.0, math.inf)
    if node.op_type == "LeakyRelu":
        alpha = next((float(a.f) for a in node.attribute if a.name == "alpha"), 0.01)
        return lambda pre: torch.nn.functional.leaky_relu(pre, alpha)
    if node.op_type == "Clip":
        bounds = {"relu6": (0.0, 6.0), "hardtanh": (-1.0, 1.0)}.get(candidate.op_type)
        if bounds is None and candidate.default_breakpoints and len(candidate.default_breakpoints) == 2:
            low, high = candidate.default_breakpoints
            bounds = (low, high)
        if bounds is not None:
            low, high = bounds
            return _clamp(low, high)
    return None


def _clamp(low: float, high: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.clamp(pre, low, high)`` bit for bit (``-0.0`` and NaN kept, as ``torch.relu`` does for
    ``(0, inf)``), computed by numpy's single-threaded ``clip`` for a float CPU tensor: torch's
    threaded elementwise kernels contend with the runtime's worker threads."""

    def clamp(pre: torch.Tensor) -> torch.Tensor:
        if pre.device.type == "cpu" and pre.dtype in (torch.float32, torch.float64) and not pre.requires_grad:
            return torch.from_numpy(np.clip(pre.numpy(), low, high))
        return torch.clamp(pre, low, high)

    return clamp


class _OrtRunner:
    """An onnxruntime session fed in chunks of ``fixed_batch`` when the model fixes its batch size.

    It uses as many threads as torch and does not spin between runs, so it leaves the cores to the
    torch code that processes its results.
    """

    def __init__(self, model: bytes | str, placement: OrtPlacement, inputs: list[InputSpec]) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=placement.providers)
        except Exception as exc:
            if (memory := out_of_memory(exc, "loading the model into onnxruntime")) is not None:
                raise memory from exc
            code = "model_unsupported" if type(exc).__name__ == "NotImplemented" else "model_invalid"
            raise AnalysisError(f"onnxruntime could not load the model: {exc}", code=code) from exc
        self.inputs = inputs
        self._bound: list[Any] = []
        self.dtypes = {spec.name: np.dtype(spec.dtype) for spec in inputs}
        leading = [spec.shape[0] if spec.shape else None for spec in inputs]
        fixed = all(isinstance(d, int) and d > 0 for d in leading) and len(set(leading)) == 1
        self.fixed_batch = int(leading[0] or 0) if leading and fixed else None

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    def run(
        self, names: list[str], feeds: dict[str, np.ndarray], size: int, what: str = "a batch"
    ) -> list[np.ndarray]:
        """Run ``names`` for ``size`` samples; every returned array is ``[size, ...]``. A failure is
        an ``AnalysisError`` naming its cause (``worker.engine.capture.run_errors``)."""
        try:
            return self._run(names, feeds, size)
        except Exception as exc:
            shapes = {name: array.shape for name, array in feeds.items()}
            raise run_failure(exc, what, shapes) from exc

    def run_bound(
        self, names: list[str], feeds: dict[str, np.ndarray], device: torch.device, what: str = "a batch"
    ) -> list[torch.Tensor]:
        """:meth:`run` with the outputs left in ``device``'s memory, where the session computed
        them (IOBinding), and handed to torch through DLPack: no copy through the host on a GPU.
        Every returned tensor is ``[size, ...]`` as from :meth:`run`; only for a session without a
        fixed batch size (or fed exactly that many samples)."""
        try:
            binding = self.session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in names:
                binding.bind_output(name, device.type, device.index or 0)
            self.session.run_with_iobinding(binding)
            values = binding.get_outputs()
            # OrtValue.__dlpack__ asks for the OrtValue to outlive the tensor; the capsule holds its
            # own reference to the data in onnxruntime 1.32, and this one lasts until the next run.
            self._bound = values
            return [torch.utils.dlpack.from_dlpack(value) for value in values]
        except Exception as exc:
            shapes = {name: array.shape for name, array in feeds.items()}
            raise run_failure(exc, what, shapes) from exc

    def _run(self, names: list[str], feeds: dict[str, np.ndarray], size: int) -> list[np.ndarray]:
        chunk = self.fixed_batch
        if chunk is None or chunk == size:
            return list(self.session.run(names, feeds))
        parts: list[list[np.ndarray]] = []
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            piece = {name: _pad(array[start:stop], chunk) for name, array in feeds.items()}
            parts.append([out[: stop - start] for out in self.session.run(names, piece)])
        return [np.concatenate(column, axis=0) for column in zip(*parts, strict=True)]

    def feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        return {spec.name: as_numpy(batch[spec.name], self.dtypes[spec.name]) for spec in self.inputs}


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` ``[n, ...]`` padded to ``[size, ...]`` by repeating its last sample."""
    if array.shape[0] == size:
        return array
    filler = np.repeat(array[-1:], size - array.shape[0], axis=0)
    return np.concatenate([array, filler], axis=0)


def _with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """``proto`` serialized with ``names`` appended to the graph outputs; ``proto`` is left as it was."""
    original = len(proto.graph.output)
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    try:
        return bytes(proto.SerializeToString())
    finally:
        del proto.graph.output[original:]


def _layer_names(proto: onnx.ModelProto, candidates: Sequence[Candidate]) -> list[str]:
    """PyTorch module paths where the dynamo exporter recorded them for every candidate
    (``worker.engine.capture.naming``: ``"features.1:relu"``, as TorchScript and ``.pt2`` name
    the same layer); otherwise the anchor node's name when non-empty and unique in the graph, else
    its output's name, a name still shared getting ``#k`` appended (k counting from 0 in graph
    order)."""
    paths = [scope_path(c.anchor) for c in candidates]
    if candidates and all(path is not None for path in paths):
        return module_layer_names([p or "" for p in paths], [c.op_type for c in candidates])
    node_names = Counter(node.name for node in proto.graph.node)
    names = [
        c.anchor.name if c.anchor.name and node_names[c.anchor.name] == 1 else c.post for c in candidates
    ]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        if counts[name] > 1:
            unique.append(f"{name}#{seen[name]}")
            seen[name] += 1
        else:
            unique.append(name)
    return unique


@dataclass(frozen=True)
class OnnxGates:
    """The analysed recurrent nodes and the gate indices kept per node (into ``OnnxSite.gates``)."""

    sites: list[OnnxSite]
    kept: list[list[int]]

    @property
    def count(self) -> int:
        return sum(len(kept) for kept in self.kept)

    @property
    def exposed(self) -> int:
        return sum(len(site.exposed) for site in self.sites)

    def candidates(self) -> list[Candidate]:
        """A candidate per exposed value of each site (its value before and after alike)."""
        return [Candidate("value", name, name, site.node, -1) for site in self.sites for name in site.exposed]

    def values(self, arrays: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(pre, post)`` ``[B, T, H]`` of each kept gate, from the sites' exposed values in order."""
        found = []
        start = 0
        for site, kept in zip(self.sites, self.kept, strict=True):
            stop = start + len(site.exposed)
            gates = site.compute(arrays[start:stop])
            found += [gates[g] for g in kept]
            start = stop
        return found

    def layers(
        self,
        proto: onnx.ModelProto,
        placement: OrtPlacement,
        inputs: list[InputSpec],
        example: Batch,
        size: int,
        feed_names: set[str],
    ) -> list[ActivationLayer]:
        """Every kept gate as a layer ``"<module path or node>:<gate>"``, its shape from the example."""
        if not self.sites:
            return []
        names, slots = _plan(proto, self.candidates(), feed_names)
        runner = _OrtRunner(_session_bytes(proto, names), placement, inputs)
        feeds = runner.feeds(example)
        arrays = runner.run(names, feeds, size, what="the example batch")
        exposed = [
            torch.from_numpy(feeds[p.feed] if p.feed is not None else arrays[p.index or 0]) for p, _ in slots
        ]
        values = iter(self.values(exposed))
        made = []
        for site, kept in zip(self.sites, self.kept, strict=True):
            for gate in kept:
                pre, _ = next(values)
                name, op_type = site.gates[gate]
                made.append(
                    ActivationLayer(f"{site.where}:{name}", op_type, tuple(int(d) for d in pre.shape[1:]))
                )
        return made

    def selected(self, positions: Sequence[int]) -> OnnxGates:
        """The sites and gates at ``positions`` (indices into every kept gate of every site)."""
        flat = [(k, gate) for k, kept in enumerate(self.kept) for gate in kept]
        per_site: dict[int, list[int]] = {}
        for position in positions:
            site, gate = flat[position]
            per_site.setdefault(site, []).append(gate)
        order = sorted(per_site)
        return OnnxGates([self.sites[k] for k in order], [per_site[k] for k in order])


def _every_gate(proto: onnx.ModelProto, runner: _OrtRunner) -> OnnxGates:
    """Every gate of every supported recurrent node; none for a model run in fixed-size chunks
    (chunks are joined along the first axis, where a time-first node keeps time)."""
    if runner.fixed_batch is not None:
        return OnnxGates([], [])
    sites = find_sites(proto)
    return OnnxGates(sites, [list(range(len(site.gates))) for site in sites])


@dataclass(frozen=True)
class OnnxEmbedding:
    """The model cut at its embedding: ``head`` computes the cut values, ``runner`` runs the tail
    (inputs: the model's and the cut values) with the layers exposed as ``slots`` say."""

    cut: OnnxCut
    head: _OrtRunner
    runner: _OrtRunner
    output_names: list[str]
    slots: list[tuple[_Slot, _Slot]]


def _per_sample_floats(
    proto: onnx.ModelProto,
    values: list[str],
    placement: OrtPlacement,
    inputs: list[InputSpec],
    example: Batch,
) -> dict[str, np.ndarray]:
    """The ``values`` that are floating ``[B, ...]`` tensors on ``example`` at batch sizes B and
    2B, with their values at B."""
    first = proto.graph.output[0].name
    names = [first, *(v for v in values if v != first)]
    runner = _OrtRunner(_session_bytes(proto, names), placement, inputs)
    size = batch_size(example, inputs)
    runs = []
    for feeds, rows in ((runner.feeds(example), size), (runner.feeds(doubled(example, inputs)), 2 * size)):
        arrays = runner.run(names, feeds, rows, what="the example batch")
        runs.append({name: a for name, a in zip(names, arrays, strict=True) if _fits(a, rows)})
    return {name: array for name, array in runs[0].items() if name in runs[1] and name in values}


def _fits(array: object, rows: int) -> bool:
    return (
        isinstance(array, np.ndarray)
        and np.issubdtype(array.dtype, np.floating)
        and array.ndim >= 1
        and array.shape[0] == rows
    )


def _embedding(
    proto: onnx.ModelProto,
    placement: OrtPlacement,
    inputs: list[InputSpec],
    example: Batch,
    selected: Sequence[Candidate],
) -> OnnxEmbedding | None:
    """The cut below the integer inputs, when they have one."""
    integer = [spec.name for spec in inputs if not np.issubdtype(np.dtype(spec.dtype), np.floating)]
    if not integer:
        return None
    floats = _per_sample_floats(proto, reached_from(proto, integer), placement, inputs, example)
    cut = find_cut(proto, integer, floats)
    if cut is None:
        return None
    tail_inputs = [
        *inputs,
        *(InputSpec(name, (None, *floats[name].shape[1:]), floats[name].dtype.name) for name in cut.frontier),
    ]
    output_names, slots = _plan(cut.tail, selected, {spec.name for spec in tail_inputs}, derive=True)
    head = _OrtRunner(_session_bytes(proto, [proto.graph.output[0].name, *cut.frontier]), placement, inputs)
    tail = _OrtRunner(_session_bytes(cut.tail, output_names), placement, tail_inputs)
    return OnnxEmbedding(cut, head, tail, output_names, slots)


class OnnxCaptureModel:
    """An ONNX model run by onnxruntime; see ``worker.engine.capture.base.CaptureModel``."""

    format: ModelFormat = "onnx"

    def __init__(
        self,
        *,
        path: Path,
        placement: OrtPlacement,
        inputs: list[InputSpec],
        layers: list[ActivationLayer],
        runner: _OrtRunner,
        output_names: list[str],
        slots: list[tuple[_Slot, _Slot]],
        sample_shapes: dict[str, tuple[int, ...]],
        gates: OnnxGates | None = None,
        bind_outputs: bool = False,
    ) -> None:
        self.inputs = inputs
        self._gates = gates or OnnxGates([], [])
        self.layers = layers
        self.device = placement.device
        self._path = path
        self._placement = placement
        self._runner = runner
        self._output_names = output_names
        self._slots = slots
        self._sample_shapes = sample_shapes
        self._plain: _OrtRunner | None = None
        self._bind_outputs = bind_outputs
        self.runtime = f"onnxruntime {_ort().__version__} {runner.provider}"
        self.warnings: list[str] = []
        self.embedding: OnnxEmbedding | None = None

    def capture(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """Run ``batch`` (``[B, ...]`` per input name) and return the first output ``[B, ...]`` and
        ``pre[k]`` / ``post[k]`` ``[B, neurons_k]`` float32 for every layer."""
        size = self._check(batch)
        return self._run(self._runner, self._output_names, self._slots, batch, size)

    def _run(
        self,
        runner: _OrtRunner,
        output_names: list[str],
        slots: list[tuple[_Slot, _Slot]],
        batch: Batch,
        size: int,
    ) -> CaptureResult:
        feeds = runner.feeds(batch)
        arrays: Sequence[np.ndarray | torch.Tensor]
        if self._bind_outputs and runner.fixed_batch in (None, size):
            # Outputs stay in the device's memory on their way to the pattern codes.
            arrays = runner.run_bound(output_names, feeds, self.device)
        else:
            arrays = runner.run(output_names, feeds, size)

        def value(slot: _Slot) -> torch.Tensor:
            array = feeds[slot.feed] if slot.feed is not None else arrays[slot.index or 0]
            return self._to_torch(array.reshape(size, -1))

        plain = len(slots) - self._gates.exposed
        pre = [value(p) for p, _ in slots[:plain]]
        post = [
            q.derive(pre[k]) if q.derive is not None else value(q) for k, (_, q) in enumerate(slots[:plain])
        ]

        def raw(slot: _Slot) -> torch.Tensor:
            return self._to_torch(feeds[slot.feed] if slot.feed is not None else arrays[slot.index or 0])

        for gate_pre, gate_post in self._gates.values([raw(p) for p, _ in slots[plain:]]):
            pre.append(gate_pre.reshape(size, -1))
            post.append(gate_post.reshape(size, -1))
        return CaptureResult(outputs=self._to_torch(arrays[0]), pre=pre, post=post)

    @property
    def embedding_names(self) -> list[str]:
        """The tensors transition density interpolates for integer inputs (``"<module>:<value>"``),
        keyed in :meth:`embed`'s result by :attr:`embedding_inputs`; empty when there are none."""
        return list(self.embedding.cut.names) if self.embedding is not None else []

    @property
    def embedding_inputs(self) -> list[str]:
        return list(self.embedding.cut.frontier) if self.embedding is not None else []

    def embed(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding tensors ``[B, ...]`` of ``batch``, keyed by :attr:`embedding_inputs`."""
        if self.embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        size = self._check(batch)
        head = self.embedding.head
        arrays = head.run(self.embedding.cut.frontier, head.feeds(batch), size, "the embedding of a batch")
        return {
            name: self._to_torch(array)
            for name, array in zip(self.embedding.cut.frontier, arrays, strict=True)
        }

    def capture_embedded(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """:meth:`capture` from the embedding: ``batch`` holds the model's inputs (integer ones
        are read only for what is not embedded) and every :attr:`embedding_inputs` tensor."""
        if self.embedding is None:
            raise AnalysisError("expected a model with integer inputs to embed, got none", code="internal")
        tail = self.embedding
        size = batch_size(batch, tail.runner.inputs)
        return self._run(tail.runner, tail.output_names, tail.slots, batch, size)

    def infer(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """The first output ``[B, ...]`` of the unmodified model, nothing captured."""
        size = self._check(batch)
        if self._plain is None:
            self._plain = _OrtRunner(str(self._path), self._placement, self.inputs)
        first = self._output_names[0]
        return self._to_torch(self._plain.run([first], self._plain.feeds(batch), size)[0])

    def _check(self, batch: Batch) -> int:
        size = batch_size(batch, self.inputs)
        check_sample_shapes(batch, self._sample_shapes)
        return size

    def _to_torch(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``array`` as a float32 tensor on the model's device (a tensor from the device path is
        already there)."""
        tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
        if tensor.dtype != torch.float32:
            tensor = tensor.to(torch.float32)
        return tensor.to(self.device) if self.device.type != "cpu" else tensor


def _discover(
    proto: onnx.ModelProto,
    candidates: list[Candidate],
    runner: _OrtRunner,
    example: Batch,
    size: int,
    names: list[str],
    dropped: list[str] | None = None,
) -> list[tuple[Candidate, str, tuple[int, ...]]]:
    """Run the example, and the example twice over, with every candidate exposed; keep those with
    float ``[B, ...]`` values of the same shape before and after in both runs (this drops
    activations on weights or on shape computations). The names of float activations whose
    shape changes with the batch but not along their first axis go to ``dropped``. A
    post-activation derived from the pre-activation (``_post_from_pre``) has its shape by
    construction and is not exposed, so the session that discovers can also be the one that
    captures."""
    output_names, slots = _plan(proto, candidates, {spec.name for spec in runner.inputs}, derive=True)
    per_sample: list[set[tuple[int, ...] | None]] = [set() for _ in candidates]
    raw: list[set[tuple[int, ...]]] = [set() for _ in candidates]
    floating = [True] * len(candidates)
    for feeds, rows in (
        (runner.feeds(example), size),
        (runner.feeds(doubled(example, runner.inputs)), 2 * size),
    ):
        arrays = runner.run(output_names, feeds, rows, what="the example batch")
        for k, (pre_slot, post_slot) in enumerate(slots):
            pre = feeds[pre_slot.feed] if pre_slot.feed is not None else arrays[pre_slot.index or 0]
            if post_slot.derive is not None:
                post = pre
            elif post_slot.feed is not None:
                post = feeds[post_slot.feed]
            else:
                post = arrays[post_slot.index or 0]
            fits = np.issubdtype(pre.dtype, np.floating) and pre.ndim >= 1 and pre.shape == post.shape
            per_sample[k].add(tuple(int(d) for d in pre.shape[1:]) if fits and pre.shape[0] == rows else None)
            raw[k].add(tuple(int(d) for d in pre.shape))
            floating[k] = floating[k] and bool(np.issubdtype(pre.dtype, np.floating))
    kept = []
    for k, (candidate, name, seen) in enumerate(zip(candidates, names, per_sample, strict=True)):
        shape = seen.pop() if len(seen) == 1 else None
        if shape is not None:
            kept.append((candidate, name, shape))
        elif dropped is not None and floating[k] and len(raw[k]) > 1:
            dropped.append(name)
    return kept


def _plan(
    proto: onnx.ModelProto, candidates: Sequence[Candidate], feed_names: set[str], *, derive: bool = False
) -> tuple[list[str], list[tuple[_Slot, _Slot]]]:
    """Session output names (the model's first output, then every value to expose, deduplicated)
    and, per candidate, where its pre / post values land; with ``derive``, piecewise-linear
    post-activations are computed from the pre-activations instead of exposed."""
    existing = [out.name for out in proto.graph.output]
    output_names = [existing[0]]
    position = {existing[0]: 0}

    def slot(name: str) -> _Slot:
        if name in feed_names:
            return _Slot(None, feed=name)
        if name not in position:
            position[name] = len(output_names)
            output_names.append(name)
        return _Slot(position[name])

    def post_slot(candidate: Candidate) -> _Slot:
        twin = _post_from_pre(candidate) if derive else None
        if twin is not None and candidate.post not in position:
            return _Slot(None, derive=twin)
        return slot(candidate.post)

    slots = [(slot(c.pre), post_slot(c)) for c in candidates]
    return output_names, slots


def _session_bytes(proto: onnx.ModelProto, output_names: list[str]) -> bytes:
    declared = {out.name for out in proto.graph.output}
    return _with_outputs(proto, [name for name in output_names if name not in declared])


def graph_index(proto: onnx.ModelProto) -> GraphIndex[str]:
    """The module outputs (module paths from the dynamo exporter's metadata) and the value and
    node names of the top-level graph, for capture points."""
    nodes = [
        GraphNode([o for o in node.output if o], list(node.input), scope_modules(node), node.name)
        for node in proto.graph.node
    ]
    initializers = {init.name for init in proto.graph.initializer}
    named = [v.name for v in proto.graph.input if v.name not in initializers]
    named += [o for node in proto.graph.node for o in node.output if o]
    return index_graph(nodes, [out.name for out in proto.graph.output], {name: name for name in named})


def _capture_candidates(
    proto: onnx.ModelProto, points: Sequence[CapturePoint], path: Path
) -> list[Candidate]:
    """A candidate per capture point, its value both before and after."""
    hint = (
        "; a module the exporter fused into another (a BatchNorm into the Gemm or Conv before it) "
        "is kept by torch.onnx.export(..., dynamo=True, optimize=False)"
    )
    values = resolve_points(points, graph_index(proto), f"ONNX model {path.name}", hint)
    producers = {o: (k, node) for k, node in enumerate(proto.graph.node) for o in node.output}
    found = []
    for point, value in zip(points, values, strict=True):
        order, anchor = producers.get(value, (-1, onnx.NodeProto()))
        found.append(Candidate(CAPTURE_OP_TYPE, value, value, anchor, order, tuple(point.breakpoints)))
    return found


def load_onnx(
    path: Path,
    *,
    device: str,
    layer_names: Sequence[str] | None,
    example: Example,
    external_data: ExternalData = "reject",
    capture_points: Sequence[CapturePoint] = (),
    bind_outputs: bool | None = None,
) -> OnnxCaptureModel:
    """Open an ONNX model and discover its activation layers on ``example`` (``[B, ...]`` per input),
    the ``capture_points`` layers after them.

    ``bind_outputs``: return the captured values in the device's memory through IOBinding and
    DLPack instead of as host arrays (``None``: on a CUDA device only; the CPU path is unchanged).

    Raises ``AnalysisError`` with ``model_invalid``, ``dataset_shape_mismatch``, ``out_of_memory``,
    ``model_runtime_error``, ``no_activation_layers``, ``unknown_layer``, ``unknown_tensor`` or
    ``device_unavailable``.
    """
    proto = load_proto(path, external_data=external_data)
    inputs = onnx_inputs(proto)
    placement = ort_placement(device, list(_ort().get_available_providers()))
    example = example_for(example, inputs)
    size = batch_size(example, inputs)
    check_declared_shapes(example, inputs)
    constants = {init.name for init in proto.graph.initializer}
    candidates = [c for c in find_activations(proto.graph) if c.pre not in constants]
    if not candidates and not capture_points:
        ops = sorted({node.op_type for node in proto.graph.node})
        raise AnalysisError(
            f"expected at least one activation node (Relu, Sigmoid, Gelu, ...) in {path.name}, found none "
            f"among its op types {ops}",
            code="no_activation_layers",
        )
    names = _layer_names(proto, candidates)
    points = _capture_candidates(proto, capture_points, path)
    point_names = _capture_names(capture_points, names)
    candidates, names = [*candidates, *points], [*names, *point_names]
    discovery_outputs, _ = _plan(proto, candidates, {spec.name for spec in inputs}, derive=True)
    runner = _OrtRunner(_session_bytes(proto, discovery_outputs), placement, inputs)
    dropped: list[str] = []
    kept = _discover(proto, candidates, runner, example, size, names, dropped)
    shapes = {name: shape for _, name, shape in kept}
    for point, name in zip(capture_points, point_names, strict=True):
        check_shape(point, shapes.get(name))
    if not kept:
        raise AnalysisError(
            f"expected at least one activation with per-sample float values in {path.name}; "
            f"the {len(candidates)} activation nodes found act on weights or shapes only",
            code="no_activation_layers",
        )
    feed_names = {spec.name for spec in inputs}
    every = _every_gate(proto, runner)
    gate_layers = every.layers(proto, placement, inputs, example, size, feed_names)
    keep = selected_positions(
        [*(name for _, name, _ in kept), *(layer.name for layer in gate_layers)], layer_names
    )
    plain = [i for i in keep if i < len(kept)]
    gates = every.selected([i - len(kept) for i in keep[len(plain) :]])
    chosen_gates = [gate_layers[i - len(kept)] for i in keep[len(plain) :]]
    kept = [kept[i] for i in plain]
    selected = [*(candidate for candidate, _, _ in kept), *gates.candidates()]
    output_names, slots = _plan(proto, selected, feed_names, derive=True)
    if output_names != discovery_outputs:
        runner = _OrtRunner(_session_bytes(proto, output_names), placement, inputs)
    layers = [
        *(
            ActivationLayer(name, candidate.op_type, shape, candidate.default_breakpoints, candidate.params)
            for candidate, name, shape in kept
        ),
        *chosen_gates,
    ]
    sample_shapes = {spec.name: tuple(int(d) for d in example[spec.name].shape[1:]) for spec in inputs}
    model = OnnxCaptureModel(
        path=path,
        placement=placement,
        inputs=inputs,
        layers=layers,
        runner=runner,
        output_names=output_names,
        slots=slots,
        sample_shapes=sample_shapes,
        gates=gates,
        bind_outputs=placement.device.type == "cuda" if bind_outputs is None else bind_outputs,
    )
    model.embedding = _embedding(proto, placement, inputs, example, selected)
    analysed = {id(site.node) for site in every.sites}
    model.warnings = [
        recurrent_warning(ONNX_RECURRENT[node.op_type], scope_path(node) or node.name)
        for node in proto.graph.node
        if node.op_type in ONNX_RECURRENT and id(node) not in analysed
    ]
    model.warnings += control_flow_warnings(proto.graph)
    model.warnings += batch_axis_warnings(dropped)
    return model
