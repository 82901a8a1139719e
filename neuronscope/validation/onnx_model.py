"""Untrusted ONNX models, checked without running them and without touching any other file.

onnxruntime resolves tensors stored as external data by itself, reading whatever path the model
names; the onnx library's checks do not stop that. So every tensor slot a model has (graph
initializers, sparse initializers, node attributes of any type, subgraphs of If/Loop/Scan at any
depth, function bodies and their default attributes, training graphs) is searched, and one stored
externally is refused before the checker (which itself stats external files) ever sees the model.

Error codes (:class:`~neuronscope.errors.InvalidInput`, HTTP 422): ``model_invalid``,
``model_too_large``, ``model_external_data``, ``model_custom_op``, ``model_unsupported``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx
import onnx.checker

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import quote
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.specs import Dim, ModelInput

#: Operator domains whose kernels ship with onnxruntime's standard set: no custom code.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
#: Domains onnxruntime (or its extensions) provides kernels for; a model-local function may not
#: claim one, since the runtime could resolve a node there to its own kernel instead.
_RUNTIME_DOMAIN_PREFIXES = ("ai.onnx.", "com.microsoft", "com.ms.", "org.pytorch", "ai.onnx.contrib")
_DEFAULT_DOMAINS = ("", "ai.onnx")
_DTYPE_RENAMES = {"float": "float32", "double": "float64"}


@dataclass(frozen=True)
class OnnxModelSummary:
    """A checked ONNX model: its graph inputs (initializers excluded), default-domain opset and IR
    version."""

    inputs: tuple[ModelInput, ...]
    opset: int
    ir_version: int


def _invalid(message: str, code: str = "model_invalid") -> InvalidInput:
    return InvalidInput(message, code=code)


def _short(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + "…"


def parse_onnx_file(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """Read and parse an ONNX file, refusing one over ``limits.max_model_bytes``.

    The bytes are parsed as a protobuf ``ModelProto`` whatever the file is named, and external
    data is never loaded: only the given file is opened. Reading takes memory proportional to the
    file (``read(n)`` reserves all ``n`` bytes up front, so the read is sized by the file, not by
    the limit: a job's address-space limit can be far below ``max_model_bytes``).
    """
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            raise _invalid("model: expected an ONNX model, got an empty file")
        if size > limits.max_model_bytes:
            raise _invalid(
                f"model: the file is {size} bytes; at most {limits.max_model_bytes} are accepted",
                code="model_too_large",
            )
        data = fp.read(size)
        if fp.read(1):  # it grew since fstat
            raise _invalid(
                f"model: the file grew past {size} bytes while it was read; expected a file that "
                "does not change",
            )
    try:
        model = onnx.load_model_from_string(data, format="protobuf")
    except MemoryError:
        raise
    except Exception as exc:  # DecodeError, RecursionError, ... from hostile bytes
        if "alloc failed" in str(exc):  # protobuf's arena could not allocate: memory, not bad bytes
            raise MemoryError(f"parsing the {size}-byte ONNX model ran out of memory") from exc
        raise _invalid(
            "model: expected an ONNX model (a serialized ModelProto), but the bytes do not parse: "
            f"{_short(exc)}"
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise _invalid(
            "model: expected an ONNX model with an IR version and a graph, got a protobuf message "
            f"with ir_version={model.ir_version} and {'a' if model.HasField('graph') else 'no'} graph"
        )
    return model


def _check_tensor(tensor: onnx.TensorProto, where: str) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        raise _invalid(
            f"model: {where}: tensor {quote(tensor.name)} is stored as external data (location "
            f"{quote(location)}); expected every tensor embedded in the model file, external data is "
            "never read (re-save with onnx.save_model(model, path, save_as_external_data=False))",
            code="model_external_data",
        )


def _check_sparse(tensor: onnx.SparseTensorProto, where: str) -> None:
    _check_tensor(tensor.values, f"{where} (sparse values)")
    _check_tensor(tensor.indices, f"{where} (sparse indices)")


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"node {quote(node.name)}" if node.name else f"node #{index} ({quote(node.op_type)})"


def _walk(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto]]:
    """Every node of every graph, subgraph and function, with where it is; raises on external data.

    Iterative, so nesting depth costs no Python stack.
    """
    graphs: list[tuple[str, onnx.GraphProto]] = [(f"graph {quote(model.graph.name)}", model.graph)]
    for index, training in enumerate(model.training_info):
        graphs.append((f"training_info[{index}].initialization", training.initialization))
        graphs.append((f"training_info[{index}].algorithm", training.algorithm))
    nodes: list[tuple[str, onnx.NodeProto]] = []

    def visit_attribute(attribute: onnx.AttributeProto, where: str) -> None:
        # Every slot is searched whatever ``attribute.type`` claims: a runtime may read any of them.
        where = f"{where} attribute {quote(attribute.name)}"
        _check_tensor(attribute.t, where)
        for index, tensor in enumerate(attribute.tensors):
            _check_tensor(tensor, f"{where}[{index}]")
        _check_sparse(attribute.sparse_tensor, where)
        for index, sparse in enumerate(attribute.sparse_tensors):
            _check_sparse(sparse, f"{where}[{index}]")
        if attribute.HasField("g"):
            graphs.append((f"{where} subgraph {quote(attribute.g.name)}", attribute.g))
        for index, graph in enumerate(attribute.graphs):
            graphs.append((f"{where}[{index}] subgraph {quote(graph.name)}", graph))

    def visit_nodes(container: list[onnx.NodeProto], where: str) -> None:
        for index, node in enumerate(container):
            node_where = f"{where} > {_node_label(node, index)}"
            nodes.append((node_where, node))
            for attribute in node.attribute:
                visit_attribute(attribute, node_where)

    for function in model.functions:
        where = f"function {quote(function.domain)}.{quote(function.name)}"
        for attribute in function.attribute_proto:
            visit_attribute(attribute, f"{where} default")
        visit_nodes(list(function.node), where)
    while graphs:
        where, graph = graphs.pop()
        for tensor in graph.initializer:
            _check_tensor(tensor, f"{where} initializer")
        for sparse in graph.sparse_initializer:
            _check_sparse(sparse, f"{where} sparse initializer")
        visit_nodes(list(graph.node), where)
    return nodes


def _check_domains(model: onnx.ModelProto, nodes: list[tuple[str, onnx.NodeProto]]) -> None:
    local = {(function.domain, function.name) for function in model.functions}
    for domain, name in sorted(local):
        if domain not in ALLOWED_DOMAINS and domain.startswith(_RUNTIME_DOMAIN_PREFIXES):
            raise _invalid(
                f"model: local function {quote(name)} is declared in domain {quote(domain)}, which the "
                "runtime provides its own operators for; expected functions in a domain of their own",
                code="model_custom_op",
            )
    for where, node in nodes:
        if node.domain in ALLOWED_DOMAINS or (node.domain, node.op_type) in local:
            continue
        raise _invalid(
            f"model: {where} uses operator {quote(node.op_type)} from domain {quote(node.domain)}; "
            f"expected standard ONNX operators (domains {sorted(ALLOWED_DOMAINS)}) or the model's own "
            "functions: custom operators are not run",
            code="model_custom_op",
        )


def _dtype_name(elem_type: int, input_name: str) -> str:
    try:
        name = str(onnx.TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        name = "undefined"
    if name == "undefined":
        raise _invalid(f"model: input {quote(input_name)}: expected a tensor element type, got {elem_type}")
    return _DTYPE_RENAMES.get(name, name)


def _summarise_inputs(graph: onnx.GraphProto) -> tuple[ModelInput, ...]:
    initializers = {tensor.name for tensor in graph.initializer} | {
        sparse.values.name for sparse in graph.sparse_initializer
    }
    inputs: list[ModelInput] = []
    for value in graph.input:
        if value.name in initializers:
            continue  # IR < 4 lists initializers among the inputs
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise _invalid(
                f"model: input {quote(value.name)} is a {kind or 'untyped value'}; "
                "expected tensor inputs only",
                code="model_unsupported",
            )
        tensor_type = value.type.tensor_type
        shape: tuple[Dim, ...] | None = None
        if tensor_type.HasField("shape"):
            dims: list[Dim] = []
            for dim in tensor_type.shape.dim:
                which = dim.WhichOneof("value")
                if which == "dim_value" and dim.dim_value >= 0:
                    dims.append(int(dim.dim_value))
                elif which == "dim_param" and dim.dim_param:
                    dims.append(str(dim.dim_param))
                else:
                    dims.append(None)
            shape = tuple(dims)
        inputs.append(ModelInput(value.name, shape, _dtype_name(tensor_type.elem_type, value.name)))
    if not inputs:
        raise _invalid("model: expected at least one graph input to feed the dataset to, got none")
    return tuple(inputs)


def _run_checker(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=False)
    except MemoryError:  # the process's memory limit, not the model's fault
        raise
    except Exception as exc:  # ValidationError, and anything else a hostile model provokes
        raise _invalid(f"model: the ONNX checker rejected the model: {_short(exc, 800)}") from exc


def check_onnx_model(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> OnnxModelSummary:
    """Check an untrusted ONNX file and describe its inputs; the model is never run.

    Order: size and parse (``model_too_large``, ``model_invalid``), external data anywhere
    (``model_external_data``; nothing it names is opened), operator domains (``model_custom_op``),
    the onnx checker (``model_invalid``), then the inputs (``model_unsupported`` for non-tensor ones).
    """
    model = parse_onnx_file(path, limits)
    nodes = _walk(model)
    _check_domains(model, nodes)
    _run_checker(model)
    opsets = [entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS]
    if not opsets:
        raise _invalid("model: expected an opset import for the default ONNX domain, got none")
    return OnnxModelSummary(
        inputs=_summarise_inputs(model.graph), opset=int(opsets[0]), ir_version=int(model.ir_version)
    )
