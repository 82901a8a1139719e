"""A failed model run gets the code of its real cause, with real models and real runtimes:
an allocation failure under the job's memory limit is ``out_of_memory``, a kernel that fails for
another reason than the input's shape (or a model's own ``raise``) is ``model_runtime_error``, and
only shapes that do not fit are ``dataset_shape_mismatch``. Messages carry no model-chosen text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from neuronscope.contracts import AnalysisConfig
from worker.engine import AnalysisError, analyze

ROOT = Path(__file__).resolve().parents[3]
CONFIG = AnalysisConfig.model_validate(
    {"pairs": {"count": 4}, "transition_density": None, "device": "cpu", "batch_size": 4}
)
SECRET = "root:x:0:0:secret-from-the-model"
FEATURES = 16


def onnx_model(path: Path, after_relu: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> Path:
    """``x [N, D] -> Relu -> after_relu -> y``, with node names that carry ``SECRET``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu")
    for node in after_relu:
        node.name = SECRET
    graph = helper.make_graph([relu, *after_relu], "g", [x], [y], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def dataset(path: Path, features: int = FEATURES, samples: int = 8) -> Path:
    np.savez(path, x=np.random.default_rng(0).normal(size=(samples, features)).astype(np.float32))
    return path


def failure(model: Path, data: Path) -> AnalysisError:
    with pytest.raises(AnalysisError) as caught:
        analyze(model, data, CONFIG)
    return caught.value


def test_an_onnx_kernel_error_is_a_model_runtime_error(tmp_path: Path) -> None:
    index = numpy_helper.from_array(np.array([100], np.int64), "index")
    gather = helper.make_node("Gather", ["r", "index"], ["y"], axis=1)
    error = failure(onnx_model(tmp_path / "m.onnx", [gather], [index]), dataset(tmp_path / "d.npz"))
    assert error.code == "model_runtime_error", error
    assert "Gather" in error.message and "INVALID_ARGUMENT" in error.message
    assert SECRET not in error.message and len(error.message) < 400


def test_an_onnx_shape_that_does_not_fit_is_still_a_dataset_shape_mismatch(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((FEATURES, 4), np.float32), "w")
    matmul = helper.make_node("MatMul", ["r", "w"], ["y"])
    model = onnx_model(tmp_path / "m.onnx", [matmul], [weight])
    error = failure(model, dataset(tmp_path / "d.npz", features=5))
    assert error.code == "dataset_shape_mismatch", error
    assert "MatMul" in error.message and ", 5]" in error.message
    assert SECRET not in error.message


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x)
        if bool(h.sum() >= 0):
            raise ValueError("root:x:0:0:secret-from-the-model shape dimension")
        return h


class IndexOutOfRange(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).index_select(1, torch.tensor([100]))


class Allocates(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).repeat(1, 1 << 24)  # 2 samples x 16 x 2^24 float32: 2 GiB


def script(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def test_a_torchscript_models_own_raise_is_a_model_runtime_error_without_its_text(tmp_path: Path) -> None:
    error = failure(script(Raises(), tmp_path / "m.pt"), dataset(tmp_path / "d.npz"))
    assert error.code == "model_runtime_error", error
    assert "secret" not in error.message and "ValueError" not in error.message
    assert "torch" in error.message and len(error.message) < 400


def test_a_torch_kernel_error_is_a_model_runtime_error(tmp_path: Path) -> None:
    error = failure(script(IndexOutOfRange(), tmp_path / "m.pt"), dataset(tmp_path / "d.npz"))
    assert error.code == "model_runtime_error", error
    assert "RuntimeError" in error.message


def run_limited(model: Path, data: Path, tmp_path: Path, memory_mb: int) -> list[dict[str, object]]:
    """The real analysis child (``python -m worker.child.runner``) under an address-space limit."""
    config = tmp_path / "config.json"
    config.write_text(CONFIG.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "worker.child.runner", "--model", str(model), "--dataset", str(data),
         "--config", str(config), "--report", str(tmp_path / "report.json"),
         "--memory-mb", str(memory_mb), "--cpu-seconds", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events, proc.stderr[-2000:]
    return events


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_an_allocation_failure_under_the_memory_limit_is_out_of_memory(tmp_path: Path, kind: str) -> None:
    if kind == "onnx":
        repeats = numpy_helper.from_array(np.array([1, 1 << 24], np.int64), "repeats")
        tile = helper.make_node("Tile", ["r", "repeats"], ["y"])
        model = onnx_model(tmp_path / "m.onnx", [tile], [repeats])
    else:
        model = script(Allocates(), tmp_path / "m.pt")
    events = run_limited(model, dataset(tmp_path / "d.npz"), tmp_path, memory_mb=1024)
    error = events[-1]
    assert error["event"] == "error" and error["code"] == "out_of_memory", error
    assert "NEURONSCOPE_JOB_MEMORY_LIMIT_MB" in str(error["message"]) and SECRET not in str(error["message"])


def test_a_model_too_big_for_the_memory_limit_is_out_of_memory_not_invalid(tmp_path: Path) -> None:
    """A valid 384 MB model under a 1 GiB limit: parsing it runs out of memory (protobuf reports
    "Arena alloc failed" in a DecodeError), which is ``out_of_memory``, not ``model_invalid``."""
    weight = numpy_helper.from_array(np.zeros((FEATURES, 6_000_000), np.float32), "w")
    matmul = helper.make_node("MatMul", ["r", "w"], ["y"])
    model = onnx_model(tmp_path / "m.onnx", [matmul], [weight])
    events = run_limited(model, dataset(tmp_path / "d.npz"), tmp_path, memory_mb=1024)
    assert events[-1]["event"] == "error" and events[-1]["code"] == "out_of_memory", events[-1]
