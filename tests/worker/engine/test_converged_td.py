"""The converged TD in the report: from the ONNX front end against TD at 100,000 points, in a
token model's embedding space, the saturation warning, and prediction distance on probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from neuronscope.contracts import AnalysisConfig
from neuronscope.report_html import render_html
from neuronscope.summary import summarize
from worker.engine import analyze

PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7]]


def _config(**td: Any) -> AnalysisConfig:
    settings = {"pairs": PAIRS, "converged": True, **td}
    return AnalysisConfig.model_validate({"device": "cpu", "transition_density": settings})


def test_the_converged_count_equals_td_at_100000_points(tiny_model: Any) -> None:
    converged = analyze(tiny_model.model, tiny_model.dataset, _config())
    brute = analyze(tiny_model.model, tiny_model.dataset, _config(points=100_000, converged=False))

    td, reference = converged.transition_density, brute.transition_density
    assert td is not None and td.converged is not None and reference is not None
    assert reference.converged is None and reference.samples[0].td_converged is None
    assert [row.td_converged for row in td.samples] == [row.td for row in reference.samples]
    assert [row.neuron_changes_converged for row in td.samples] == [
        row.neuron_changes for row in reference.samples
    ]
    assert all((row.td or 0) <= (row.td_converged or -1) for row in td.samples)
    assert td.converged.methods == {"exact": 4, "adaptive": 0, "mixed": 0}
    assert td.converged.complete and td.converged.pairs_complete == 4 and td.converged.unresolved_steps == 0
    assert td.converged.mean == pytest.approx(np.mean([row.td for row in reference.samples]))
    assert 4 * 512 <= td.converged.points_evaluated < 100_000
    assert converged.timings.transition_density_passes is not None
    assert "converged (k → ∞) mean" in summarize(converged)


def test_post_space_patterns_are_counted_by_adaptive_refinement(tiny_model: Any) -> None:
    config = AnalysisConfig.model_validate(
        {"device": "cpu", "space": "post", "transition_density": {"pairs": PAIRS, "converged": True}}
    )
    report = analyze(tiny_model.model, tiny_model.dataset, config)
    td = report.transition_density
    assert td is not None and td.converged is not None
    assert td.converged.methods == {"exact": 0, "adaptive": 4, "mixed": 0}
    assert all((row.td or 0) <= (row.td_converged or -1) for row in td.samples)


def test_a_saturated_td_is_flagged_and_warned_about(tiny_model: Any) -> None:
    saturated = analyze(tiny_model.model, tiny_model.dataset, _config(points=3))
    off = analyze(tiny_model.model, tiny_model.dataset, _config(points=3, converged=False))
    fine = analyze(tiny_model.model, tiny_model.dataset, _config())

    td = saturated.transition_density
    assert td is not None and td.mean is not None and td.mean >= 0.9 * 2 and td.saturated
    assert "saturated" in td.warnings[0] and "transition_density.converged holds" in td.warnings[0]
    assert td.converged is not None and td.converged.mean is not None and td.converged.mean > 2
    assert f"Warning: {td.warnings[0]}" in summarize(saturated)
    page = render_html(saturated)
    assert "mean transition density (k → ∞)" in page and "is saturated: its mean" in page
    assert off.transition_density is not None and '"converged": true' in off.transition_density.warnings[0]
    assert fine.transition_density is not None and fine.transition_density.saturated is False
    assert fine.transition_density.warnings == [] and "saturated" not in summarize(fine)


def test_converged_td_is_off_by_default(tiny_model: Any) -> None:
    report = analyze(tiny_model.model, tiny_model.dataset, AnalysisConfig(device="cpu"))
    assert report.transition_density is not None and report.transition_density.converged is None
    assert report.timings.transition_density_passes is None


@pytest.mark.parametrize(("points", "batch_size"), [(16, 64), (100, 32)])
def test_a_split_analysis_gives_the_single_converged_count(
    points: int, batch_size: int, tiny_model: Any, tmp_path: Path
) -> None:
    from tests.worker.test_chunking import _comparable, run_stages
    from worker.engine.plan import plan_chunks

    config = AnalysisConfig.model_validate(
        {
            "device": "cpu",
            "batch_size": batch_size,
            "transition_density": {"pairs": {"count": 9}, "points": points, "converged": True},
        }
    )
    plan = plan_chunks(config, tiny_model.samples, td_points=3 * points, ps_pairs=900)
    assert len(plan.td_ranges) == 3
    merged = run_stages(plan, tiny_model.model, tiny_model.dataset, config, tmp_path)
    single = analyze(tiny_model.model, tiny_model.dataset, config)
    assert merged.transition_density is not None and merged.transition_density.converged is not None
    assert _comparable(merged) == _comparable(single)


def test_bounded_paths_are_reported_incomplete(tiny_model: Any) -> None:
    report = analyze(tiny_model.model, tiny_model.dataset, _config(points=16, converged_max_points=4))
    td = report.transition_density
    assert td is not None and td.converged is not None
    assert not td.converged.complete and td.converged.pairs_complete < 4
    assert td.converged.points_evaluated <= 4 * (16 + 4)
    assert "lower bound" in summarize(report)


def test_prediction_distance_on_probabilities_matches_a_brute_force_softmax(tiny_model: Any) -> None:
    import onnxruntime

    report = analyze(tiny_model.model, tiny_model.dataset, _config())
    session = onnxruntime.InferenceSession(str(tiny_model.model), providers=["CPUExecutionProvider"])
    x = np.load(tiny_model.dataset)["x"]
    logits = session.run(None, {"x": x})[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    upper = np.triu_indices(len(x), 1)
    distances = np.linalg.norm(probabilities[:, None] - probabilities[None], axis=2)[upper]

    section = report.prediction_distance.probabilities
    assert section is not None and section.softmax_applied
    assert section.random.pairs == len(distances)
    assert section.random.mean == pytest.approx(distances.mean(), rel=1e-5)
    assert section.spearman_vs_ps is not None and section.spearman_vs_td is not None
    assert report.prediction_distance.spearman_vs_ps != section.spearman_vs_ps  # raw outputs stay


def test_the_token_models_converged_count_runs_in_its_embedding_space(tmp_path: Path) -> None:
    from tests.worker.engine.test_token_models import TinyEncoder, _dataset, _reference_td

    torch.manual_seed(0)
    net = TinyEncoder().eval()
    ids, mask = _dataset()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (ids[:2], mask[:2]), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    np.savez(tmp_path / "data.npz", input_ids=ids.numpy(), attention_mask=mask.numpy(), y=np.arange(20) % 3)

    config = _config(points=64)
    report = analyze(tmp_path / "model.pt2", tmp_path / "data.npz", config, trusted_model=True)
    td = report.transition_density
    assert td is not None and td.space == "embedding" and td.converged is not None
    assert td.converged.methods["exact"] == 0  # GELU: adaptive
    brute = [_reference_td(net, ids, mask, row.i, row.j, 100_000) for row in td.samples]
    converged = [row.td_converged for row in td.samples]
    # Brute force merges boundaries closer than 1e-5 of the path; the converged count does not.
    assert all(c is not None and 0 <= c - b <= 1 for c, b in zip(converged, brute, strict=True))
    assert sum(c == b for c, b in zip(converged, brute, strict=True)) >= 3 and max(brute) > 10
