"""Splitting an analysis: the plan's ranges, and the staged engine (prepare, capture blocks,
gather, PS and TD blocks, merge) giving the single analysis's report number for number, in one
process."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuronscope.contracts import AnalysisConfig, Report
from worker.engine.plan import (
    CAPTURED_FILE,
    TD_PAIRS_FILE,
    ChunkPlan,
    chunk_file,
    plan_chunks,
    td_pair_count,
)


def _config(**values: Any) -> AnalysisConfig:
    return AnalysisConfig.model_validate(values)


@pytest.mark.parametrize(
    ("td", "batch_size", "td_points"),
    [
        ({"pairs": {"count": 50}, "points": 16}, 64, 100),  # 4 paths per batch
        ({"pairs": {"count": 7}, "points": 300}, 64, 1000),  # paths streamed in batches
        ({"pairs": "all", "points": 8}, 256, 40),
        ({"pairs": [[0, 1], [2, 3], [4, 5]], "points": 2}, 2, 1),
    ],
)
def test_td_blocks_cover_every_pair_once_in_whole_batches(
    td: dict[str, Any], batch_size: int, td_points: int
) -> None:
    config = _config(transition_density=td, batch_size=batch_size)
    plan = plan_chunks(config, 40, td_points=td_points, ps_pairs=0)
    pairs = td_pair_count(config, 40)
    assert plan.td_pairs == pairs and plan.split
    assert plan.td_ranges[0][0] == 0 and plan.td_ranges[-1][1] == pairs
    assert all(a[1] == b[0] for a, b in zip(plan.td_ranges, plan.td_ranges[1:], strict=False))
    points = config.transition_density.points if config.transition_density else 0
    per_batch = batch_size // points if points <= batch_size else 1
    assert all((stop - start) % per_batch == 0 for start, stop in plan.td_ranges[:-1])


def test_ps_row_blocks_hold_about_the_asked_pairs() -> None:
    plan = plan_chunks(_config(transition_density=None), 1000, td_points=0, ps_pairs=50_000)
    assert plan.ps_rows[0][0] == 0 and plan.ps_rows[-1][1] == 999
    sizes = [sum(999 - r for r in range(a, b)) for a, b in plan.ps_rows]
    assert sum(sizes) == 1000 * 999 // 2
    assert all(50_000 <= s < 51_000 for s in sizes[:-1]) and sizes[-1] <= 51_000


def test_small_jobs_and_listed_pairs_are_not_split() -> None:
    config = _config(transition_density={"pairs": {"count": 10}, "points": 100})
    assert not plan_chunks(config, 100, td_points=2_000_000, ps_pairs=100_000_000).split
    assert not plan_chunks(config, 100, td_points=0, ps_pairs=0).split
    listed = _config(pairs={"count": 100}, transition_density=None)
    assert not plan_chunks(listed, 10_000, td_points=1, ps_pairs=1).split


def _comparable(report: Report) -> dict[str, Any]:
    data = json.loads(report.to_json())
    data.pop("timings")
    data["provenance"].pop("created_at")
    return dict(data)


def test_capture_blocks_hold_whole_batches_and_bring_td_into_a_block() -> None:
    config = _config(batch_size=32, transition_density={"pairs": {"count": 5}, "points": 8})
    plan = plan_chunks(config, 1000, td_points=0, ps_pairs=0, capture_samples=100)
    assert plan.capture_ranges[0] == (0, 128) and plan.capture_ranges[-1][1] == 1000
    ranges = plan.capture_ranges
    assert all(a[1] == b[0] and (a[1] - a[0]) % 32 == 0 for a, b in itertools.pairwise(ranges))
    assert plan.td_ranges == [(0, 5)]  # the TD pairs need the labels, known after the capture
    assert plan.chunks() == [*(("capture", i) for i in range(8)), ("td", 0)]
    assert not plan_chunks(config, 100, td_points=0, ps_pairs=0, capture_samples=100).split


def run_stages(plan: ChunkPlan, model: Path, dataset: Path, config: AnalysisConfig, work: Path) -> Report:
    """Every stage of ``plan`` in order, in this process, as the workers run them."""
    from worker.engine import stages

    stages.prepare(model, dataset, config, plan, work)
    for kind, index in plan.capture_chunks():
        stages.run_capture_block(model, dataset, config, plan, index, work / chunk_file(kind, index))
    if plan.capture_ranges:
        stages.gather(config, plan, work)
    for kind, index in plan.pair_chunks():
        out = work / chunk_file(kind, index)
        if kind == "ps":
            stages.run_ps_block(work / CAPTURED_FILE, config, plan, index, out)
        else:
            stages.run_td_block(model, dataset, config, plan, work / TD_PAIRS_FILE, index, out)
    return stages.merge(config, plan, work)


@pytest.mark.parametrize(
    ("values", "capture_samples"),
    [
        # all-pairs PS in row blocks, TD paths several to a batch
        ({"transition_density": {"pairs": {"count": 9}, "points": 16}, "batch_size": 64}, 0),
        # TD paths streamed through batches, predicted labels
        (
            {
                "transition_density": {"pairs": {"count": 5}, "points": 100},
                "batch_size": 32,
                "labels": "predicted",
            },
            0,
        ),
        # sampled PS pairs (not split), TD over every pair, post-activation patterns
        ({"pairs": {"count": 50}, "transition_density": {"pairs": "all", "points": 4}, "space": "post"}, 0),
        # the capture in blocks of 2 batches (a short last one), PS and TD blocks after it
        ({"transition_density": {"pairs": {"count": 9}, "points": 16}, "batch_size": 7}, 14),
        # capture blocks, predicted labels (they come from the joined outputs), sigmoid-like Γ
        (
            {
                "transition_density": None,
                "batch_size": 16,
                "labels": "predicted",
                "breakpoints": {"relu": [-0.5, 0.0, 0.5]},
            },
            30,
        ),
    ],
)
def test_staged_analysis_equals_the_single_one(
    values: dict[str, Any], capture_samples: int, tiny_model: Any, tmp_path: Path
) -> None:
    from worker.engine import analyze

    config = _config(device="cpu", **values)
    plan = plan_chunks(
        config, tiny_model.samples, td_points=48, ps_pairs=900, capture_samples=capture_samples
    )
    assert plan.split and bool(plan.capture_ranges) == bool(capture_samples)
    merged = run_stages(plan, tiny_model.model, tiny_model.dataset, config, tmp_path)
    assert _comparable(merged) == _comparable(analyze(tiny_model.model, tiny_model.dataset, config))


def test_joined_capture_blocks_equal_one_pass_bit_for_bit(tiny_model: Any) -> None:
    import torch

    from worker.engine.analysis import DatasetCapture, open_analysis

    config = _config(device="cpu", batch_size=7, transition_density=None)
    opened = open_analysis(tiny_model.model, tiny_model.dataset, config)
    whole = opened.capture()
    blocks = (opened.capture(rows) for rows in ((0, 14), (14, 49), (49, 96)))
    joined = DatasetCapture.join(blocks, tiny_model.samples)

    index = torch.arange(tiny_model.samples)
    for layer in range(whole.store.num_layers):
        assert torch.equal(joined.store.rows(layer, index), whole.store.rows(layer, index))
    assert torch.equal(joined.outputs, whole.outputs)
    expected, found = whole.health.state(), joined.health.state()
    assert expected.keys() == found.keys()
    assert all(np.array_equal(expected[key], found[key]) for key in expected)
    assert joined.health.result(0.9, 100) == whole.health.result(0.9, 100)  # floats compared exactly
