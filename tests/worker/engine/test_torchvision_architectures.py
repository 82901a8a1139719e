"""Real architectures no one here wrote (torchvision's ResNet-18 and MobileNet v3 small, random
weights, 32 × 32 inputs), each exported three ways (traced TorchScript, ``.pt2``, ONNX from the
dynamo exporter), analysed on the same data: the same layers, named by their module paths, with the
same op types and the same figures in every format.

torchvision's model code comes from ``<venv>/torchvision-models`` (``scripts/install.sh`` puts it
there) and is imported in a subprocess: PyPI's wheel is a CUDA build whose C extension does not load
with the CPU torch (``benchmarks.architectures.import_torchvision_models`` works around that), and an
importable torchvision breaks transformers' imports in the process that has it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
MODELS = Path(sys.prefix) / "torchvision-models"

CHILD = r"""
import json, sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
from benchmarks.architectures import import_torchvision_models
from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze

models = import_torchvision_models()
out = Path(sys.argv[2])
torch.manual_seed(0)
nets = {
    "resnet18": models.resnet18(weights=None, num_classes=10),
    "mobilenet_v3_small": models.mobilenet_v3_small(weights=None, num_classes=10, width_mult=0.5),
}
x = torch.from_numpy(np.random.default_rng(1).normal(size=(24, 3, 32, 32)).astype(np.float32))
np.savez(out / "data.npz", x=x.numpy(), y=np.arange(24) % 10)
config = AnalysisConfig.model_validate({"pairs": "all", "transition_density": None, "batch_size": 8})
batch = torch.export.Dim("batch")
found = {}
for name, net in nets.items():
    net.eval()
    paths = {"torchscript": out / f"{name}.pt", "pt2": out / f"{name}.pt2", "onnx": out / f"{name}.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, (x[:2],)), str(paths["torchscript"]))
        torch.export.save(torch.export.export(net, (x[:2],), dynamic_shapes=({0: batch},)), str(paths["pt2"]))
        torch.onnx.export(net, (x[:2],), str(paths["onnx"]), dynamo=True, input_names=["x"],
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    for fmt, path in paths.items():
        report = analyze(path, out / "data.npz", config, trusted_model=True)
        found[f"{name}/{fmt}"] = {
            "layers": [[layer.name, layer.op_type, layer.neurons] for layer in report.model.layers],
            "dead": [layer.dead_count for layer in report.layers],
            "ps_random": report.pattern_similarity.random.mean,
            "separation": report.pattern_similarity.chance_corrected.separation,
        }
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not (MODELS / "torchvision" / "models").is_dir():
        pytest.skip(f"torchvision's model code is not in {MODELS} (scripts/install.sh puts it there)")
    out = tmp_path_factory.mktemp("torchvision")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(MODELS), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_three_exports_give_the_same_layers_and_figures(analysed: dict[str, Any], name: str) -> None:
    script, program, onnx = (analysed[f"{name}/{fmt}"] for fmt in ("torchscript", "pt2", "onnx"))
    assert script["layers"] == program["layers"] == onnx["layers"]
    assert script["dead"] == program["dead"] == onnx["dead"]
    for figure in ("ps_random", "separation"):
        assert program[figure] == pytest.approx(script[figure], abs=1e-4)
        assert onnx[figure] == pytest.approx(script[figure], abs=1e-4)


def test_layers_are_named_by_module_path_with_their_own_op_types(analysed: dict[str, Any]) -> None:
    resnet = [tuple(layer[:2]) for layer in analysed["resnet18/pt2"]["layers"]]
    assert len(resnet) == 17 and {op for _, op in resnet} == {"relu"}
    assert resnet[0][0].startswith("relu") and any(n.startswith("layer4.1.relu") for n, _ in resnet)
    mobile = {op for _, op, _ in analysed["mobilenet_v3_small/pt2"]["layers"]}
    assert {"relu", "hardswish", "hard_sigmoid"} <= mobile
