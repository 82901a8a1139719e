"""Hostile ONNX models: external data in every place a tensor can hide, custom ops, broken bytes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from neuronscope.errors import InvalidInput
from neuronscope.validation import (
    Limits,
    ModelInput,
    check_dataset_fits_model,
    check_model_file,
    check_onnx_model,
    detect_model_format,
    inspect_dataset,
)

OPSET = [helper.make_opsetid("", 17)]

# --- proof that a path is never opened ---------------------------------------------------------

_opened: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Every path Python opens (``open``, ``os.open``, ``io.open``) while the block runs."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


# --- building models ---------------------------------------------------------------------------


def external(tensor: TensorProto, location: str) -> TensorProto:
    """Turn ``tensor`` into one whose data would live in ``location``."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def weight(name: str = "W") -> TensorProto:
    return numpy_helper.from_array(np.ones((4, 3), np.float32), name)


def linear_graph(
    nodes: list[onnx.NodeProto] | None = None, initializers: list[TensorProto] | None = None, **kw: Any
) -> onnx.GraphProto:
    """``Y = Relu(X @ W)`` with ``X: [N, 4]``, plus any extra nodes (their outputs unused)."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("Relu", ["H"], ["Y"]),
            *(nodes or []),
        ],
        "main",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight()] if initializers is None else initializers,
        **kw,
    )


def save(path: Path, model: onnx.ModelProto) -> Path:
    # Never onnx.save_model here: it writes tensors that carry external data out to their location.
    path.write_bytes(model.SerializeToString())
    return path


def model_of(graph: onnx.GraphProto, **kw: Any) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=kw.pop("opset_imports", OPSET), **kw)


def constant(name: str, tensor: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=tensor)


def error_of(call: Callable[..., Any], *args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    return caught.value


# --- valid models --------------------------------------------------------------------------------


def test_valid_model_passes(tmp_path: Path) -> None:
    summary = check_onnx_model(save(tmp_path / "m.onnx", model_of(linear_graph())))
    assert summary.inputs == (ModelInput("X", ("N", 4), "float32"),)
    assert summary.opset == 17 and summary.ir_version > 0


def test_torch_exported_model_passes_and_fits_its_dataset(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2 * 26 * 26, 3)
    )
    path = tmp_path / "torch.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, 28, 28),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    summary = check_onnx_model(path)
    assert summary.inputs == (ModelInput("x", ("N", 1, 28, 28), "float32"),)
    assert detect_model_format(path) == "onnx"

    good, flat = tmp_path / "good.npz", tmp_path / "flat.npz"
    np.savez(good, x=np.zeros((5, 1, 28, 28), np.float32), y=np.arange(5))
    np.savez(flat, x=np.zeros((5, 784), np.float32))
    assert check_dataset_fits_model(inspect_dataset(good), summary.inputs) == {"x": "x"}
    error = error_of(check_dataset_fits_model, inspect_dataset(flat), summary.inputs)
    assert error.code == "dataset_shape_mismatch"
    assert "input 'x': expected per-sample shape (1, 28, 28) but the dataset has (784,)" in error.message


def test_local_functions_are_allowed(tmp_path: Path) -> None:
    function = helper.make_function(
        "local.fns", "Act", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], OPSET
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("Act", ["H"], ["Y"], domain="local.fns"),
        ],
        "main",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight()],
    )
    model = model_of(graph, opset_imports=[*OPSET, helper.make_opsetid("local.fns", 1)], functions=[function])
    assert check_onnx_model(save(tmp_path / "f.onnx", model)).inputs[0].name == "X"


# --- external data, wherever it hides ----------------------------------------------------------


def _if_node(branch_nodes: list[onnx.NodeProto], output: str) -> onnx.NodeProto:
    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            branch_nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, [4, 3])]
        )

    return helper.make_node(
        "If", ["cond"], ["if_out"], then_branch=branch("then"), else_branch=branch("else")
    )


def _sparse(location: str) -> onnx.SparseTensorProto:
    values = external(numpy_helper.from_array(np.ones(2, np.float32), "S"), location)
    indices = numpy_helper.from_array(np.array([0, 5], np.int64), "S_idx")
    return helper.make_sparse_tensor(values, indices, [4, 3])


def _hostile_models(location: str) -> dict[str, onnx.ModelProto]:
    def ext(tensor: TensorProto) -> TensorProto:
        return external(tensor, location)

    cond = numpy_helper.from_array(np.array(True), "cond")
    loop_body = helper.make_graph(
        [
            _if_node([constant("deep", ext(weight("deep")))], "deep"),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])],
    )
    loop = helper.make_node("Loop", ["", "cond"], [], body=loop_body)
    type_confused = helper.make_node("Relu", ["X"], ["R"])
    attribute = type_confused.attribute.add()
    attribute.name, attribute.type, attribute.i = "alpha", onnx.AttributeProto.INT, 1
    attribute.t.CopyFrom(ext(weight("hidden")))  # declared INT, but carries a tensor
    function = helper.make_function("local.fns", "Leak", [], ["b"], [constant("b", ext(weight("fn")))], OPSET)
    tensor_list = helper.make_node("Relu", ["X"], ["R2"])
    tensors = tensor_list.attribute.add()
    tensors.name, tensors.type = "table", onnx.AttributeProto.TENSORS
    tensors.tensors.extend([weight("ok"), ext(weight("listed"))])
    return {
        "initializer": model_of(linear_graph(initializers=[ext(weight())])),
        "sparse initializer": model_of(linear_graph(sparse_initializer=[_sparse(location)])),
        "sparse indices": model_of(
            linear_graph(
                sparse_initializer=[
                    helper.make_sparse_tensor(
                        numpy_helper.from_array(np.ones(2, np.float32), "S2"),
                        ext(numpy_helper.from_array(np.array([0, 5], np.int64), "S2_idx")),
                        [4, 3],
                    )
                ]
            )
        ),
        "Constant value": model_of(linear_graph([constant("C", ext(weight("C")))])),
        "Constant sparse_value": model_of(
            linear_graph([helper.make_node("Constant", [], ["CS"], sparse_value=_sparse(location))])
        ),
        "tensor list attribute": model_of(linear_graph([tensor_list])),
        "type-confused attribute": model_of(linear_graph([type_confused])),
        "If subgraph": model_of(
            linear_graph(
                [_if_node([constant("in_if", ext(weight("in_if")))], "in_if")], initializers=[weight(), cond]
            )
        ),
        "If inside Loop body": model_of(linear_graph([loop], initializers=[weight(), cond])),
        "function body": model_of(
            linear_graph([helper.make_node("Leak", [], ["leak"], domain="local.fns")]),
            opset_imports=[*OPSET, helper.make_opsetid("local.fns", 1)],
            functions=[function],
        ),
    }


@pytest.mark.parametrize("where", list(_hostile_models("x")))
@pytest.mark.parametrize(
    "location", ["/etc/passwd", "../../secrets/key.bin", "/nonexistent/neuronscope/weights.bin"]
)
def test_external_data_is_refused_and_never_opened(tmp_path: Path, where: str, location: str) -> None:
    path = save(tmp_path / "ext.onnx", _hostile_models(location)[where])
    with recording_opens() as opened:
        error = error_of(check_onnx_model, path)
    assert error.code == "model_external_data", error
    assert repr(location) in error.message
    assert opened == [str(path)]  # the model file itself, nothing else


def test_external_data_is_refused_before_the_checker_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise AssertionError("the checker must not see a model with external data")

    monkeypatch.setattr(onnx.checker, "check_model", fail)
    path = save(tmp_path / "ext.onnx", _hostile_models("/etc/passwd")["initializer"])
    assert error_of(check_onnx_model, path).code == "model_external_data"


# --- custom operators --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain", ["com.example.evil", "com.microsoft", "ai.onnx.contrib", "ai.onnx.preview.training"]
)
def test_custom_domains_are_refused(tmp_path: Path, domain: str) -> None:
    node = helper.make_node("Anything", ["X"], ["Z"], domain=domain)
    model = model_of(linear_graph([node]), opset_imports=[*OPSET, helper.make_opsetid(domain, 1)])
    error = error_of(check_onnx_model, save(tmp_path / "c.onnx", model))
    assert error.code == "model_custom_op" and repr(domain) in error.message


def test_custom_op_inside_a_subgraph_is_refused(tmp_path: Path) -> None:
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = _if_node([helper.make_node("Evil", [], ["z"], domain="evil.ops")], "z")
    model = model_of(linear_graph([node], initializers=[weight(), cond]))
    assert error_of(check_onnx_model, save(tmp_path / "c.onnx", model)).code == "model_custom_op"


def test_function_may_not_claim_a_runtime_domain(tmp_path: Path) -> None:
    function = helper.make_function(
        "com.microsoft", "FusedMatMul", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], OPSET
    )
    node = helper.make_node("FusedMatMul", ["X"], ["Z"], domain="com.microsoft")
    model = model_of(
        linear_graph([node]),
        opset_imports=[*OPSET, helper.make_opsetid("com.microsoft", 1)],
        functions=[function],
    )
    assert error_of(check_onnx_model, save(tmp_path / "c.onnx", model)).code == "model_custom_op"


# --- broken files ------------------------------------------------------------------------------


def test_checker_failure_is_reported(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["undefined_tensor"], ["Z"])
    error = error_of(check_onnx_model, save(tmp_path / "bad.onnx", model_of(linear_graph([node]))))
    assert (
        error.code == "model_invalid" and "checker" in error.message and "undefined_tensor" in error.message
    )


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_model(tmp_path: Path, keep: float) -> None:
    data = model_of(linear_graph()).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    assert error_of(check_onnx_model, path).code == "model_invalid"


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(2048))
    assert error_of(check_onnx_model, path).code == "model_invalid"
    error = error_of(detect_model_format, path)
    assert error.code == "model_invalid" and "neither" in error.message


def test_empty_and_oversized_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert error_of(check_onnx_model, empty).code == "model_invalid"
    path = save(tmp_path / "m.onnx", model_of(linear_graph()))
    assert error_of(check_onnx_model, path, Limits(max_model_bytes=16)).code == "model_too_large"


def test_non_tensor_input_is_unsupported(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["S"], ["L"])],
        "seq",
        [helper.make_tensor_sequence_value_info("S", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("L", TensorProto.INT64, [])],
    )
    assert error_of(check_onnx_model, save(tmp_path / "s.onnx", model_of(graph))).code == "model_unsupported"


def test_check_model_file_dispatches_on_content(tmp_path: Path) -> None:
    path = save(tmp_path / "named_like.pt", model_of(linear_graph()))
    summary = check_model_file(path)
    assert getattr(summary, "opset", None) == 17
