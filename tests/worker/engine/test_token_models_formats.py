"""Token models in every format: ONNX (both exporters) and TorchScript interpolate in the
embedding space as ``.pt2`` does, with the same TD per pair as a brute-force walk, and a split job
with TD blocks gives the single analysis's report."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_token_models import DIM, TinyEncoder, _dataset, _reference_td

from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze
from worker.engine.plan import plan_chunks

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_chunking import _comparable, run_stages


class ScriptableEncoder(TinyEncoder):
    """``TinyEncoder`` with its scale a module attribute, so that ``torch.jit.script`` compiles it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = float(DIM**0.5)

    def tail(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = h + self.positions(torch.arange(h.shape[1], device=h.device))
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / self.scale + (1.0 - mask[:, None, :]) * -1e4
        h = h + torch.softmax(scores, dim=-1) @ v
        h = h + self.mlp(h)
        return self.head(h.mean(dim=1))


FORMATS = ["pt2", "onnx-legacy", "onnx-dynamo", "traced", "scripted"]


def _save(kind: str, net: TinyEncoder, ids: torch.Tensor, mask: torch.Tensor, root: Path) -> Path:
    batch = torch.export.Dim("batch")
    shapes = ({0: batch}, {0: batch})
    names = ["input_ids", "attention_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pt2":
            path = root / "model.pt2"
            torch.export.save(torch.export.export(net, (ids[:2], mask[:2]), dynamic_shapes=shapes), str(path))
        elif kind.startswith("onnx"):
            path = root / f"{kind}.onnx"
            dynamo = kind == "onnx-dynamo"
            torch.onnx.export(
                net,
                (ids[:2], mask[:2]),
                str(path),
                input_names=names,
                dynamo=dynamo,
                **({"dynamic_shapes": shapes, "external_data": False} if dynamo else {}),
                **({} if dynamo else {"dynamic_axes": {name: {0: "batch"} for name in names}}),
            )
        else:
            path = root / f"{kind}.pt"
            module = torch.jit.trace(net, (ids[:2], mask[:2])) if kind == "traced" else torch.jit.script(net)
            torch.jit.save(module, str(path))
    return path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyEncoder, Path]:
    torch.manual_seed(0)
    net = ScriptableEncoder().eval()
    ids, mask = _dataset()
    root = tmp_path_factory.mktemp("token-formats")
    np.savez(root / "data.npz", input_ids=ids.numpy(), attention_mask=mask.numpy(), y=np.arange(20) % 3)
    return net, root


def _config(**values: Any) -> AnalysisConfig:
    base: dict[str, Any] = {"device": "cpu", "transition_density": {"pairs": {"count": 9}, "points": 64}}
    return AnalysisConfig.model_validate(base | values)


@pytest.mark.parametrize("kind", FORMATS)
def test_td_runs_in_the_embedding_space_in_every_format(kind: str, encoder: tuple[TinyEncoder, Path]) -> None:
    net, root = encoder
    ids, mask = _dataset()
    model = _save(kind, net, ids, mask, root)

    report = analyze(model, root / "data.npz", _config(), trusted_model=True)

    td = report.transition_density
    assert td is not None and td.space == "embedding", report.transition_density_skipped
    assert len(td.interpolated) == 2, td.interpolated
    assert [layer.op_type for layer in report.model.layers] == ["gelu", "relu"]
    if kind != "onnx-legacy":  # the legacy exporter's models keep their node names
        assert [layer.name for layer in report.model.layers] == ["mlp.1:gelu", "head.1:relu"]
    for row in td.samples:
        assert row.td == _reference_td(net, ids, mask, row.i, row.j, 64), (row.i, row.j)
    assert any(row.td for row in td.samples)


@pytest.mark.parametrize("kind", ["pt2", "onnx-legacy", "traced"])
def test_a_split_job_with_td_blocks_gives_the_single_report(
    kind: str, encoder: tuple[TinyEncoder, Path], tmp_path: Path
) -> None:
    net, root = encoder
    ids, mask = _dataset()
    model = _save(kind, net, ids, mask, root)
    config = _config(batch_size=64)
    plan = plan_chunks(config, 20, td_points=48, ps_pairs=50, capture_samples=0)
    assert plan.td_ranges and len(plan.td_ranges) > 1

    merged = run_stages(plan, model, root / "data.npz", config, tmp_path)

    single = analyze(model, root / "data.npz", config, trusted_model=True)
    assert merged.transition_density is not None and merged.transition_density.space == "embedding"
    assert _comparable(merged) == _comparable(single)
