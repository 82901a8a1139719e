"""The staged pipeline of one analysis as separate steps that read and write plain files, so each
can run in its own process on any machine (none of them knows about Celery)::

    prepare -> capture blocks -> gather -> PS row blocks, TD pair blocks -> merge -> report

The plan (:class:`~worker.engine.plan.ChunkPlan`) says which blocks exist; a part that is not
split runs inside the stage before it. Every step calls the same functions as
:func:`worker.engine.analyze`, which runs the one-block plan in one process, and ``merge`` builds
the report once (:func:`~worker.engine.analysis.assemble_report`). Capture blocks join exactly
(:meth:`~worker.engine.analysis.DatasetCapture.join`); PS blocks are integer histograms that add
up; TD blocks are per-pair integers laid end to end. The result is the single analysis's report,
number for number (timings aside).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from worker.engine.analysis import (
    Captured,
    DatasetCapture,
    OpenedAnalysis,
    ProgressCallback,
    StageClock,
    assemble_report,
    no_progress,
    open_analysis,
    settle,
    similarity_of,
    transition_counts,
    transition_limit,
    transition_pairs,
    transition_result,
)
from worker.engine.capture.device import torch_device
from worker.engine.converged_files import join_limits, load_limit, save_limit
from worker.engine.metrics.similarity import PairKindHistograms, all_pairs_histograms
from worker.engine.metrics.transition_limit import LimitResult
from worker.engine.plan import (
    CAPTURED_FILE,
    DATASET_LABELS_FILE,
    FACTS_FILE,
    TD_PAIRS_FILE,
    TD_PREPARED_FILE,
    ChunkPlan,
    chunk_file,
)
from worker.engine.report_builder import ReportFacts, TransitionResult
from worker.engine.stage_files import (
    array,
    internal,
    load_capture,
    load_captured,
    save_capture,
    save_captured,
)


def read_plan(path: Path) -> ChunkPlan:
    return ChunkPlan.model_validate_json(path.read_text())


def _opened(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    progress: ProgressCallback | None,
) -> OpenedAnalysis:
    opened = open_analysis(model_path, dataset_path, config, progress=progress)
    if opened.bound.samples != plan.samples:
        raise internal(f"plan: expected {opened.bound.samples} samples, the plan was made for {plan.samples}")
    return opened


def prepare(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    work: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """Open the model and write ``facts.json`` (what the report says about model and dataset).

    Without capture blocks, also capture the dataset (``captured.npz``), write the TD pairs and,
    when TD is not split, run it (``td-prepared.npz``). With capture blocks, write the dataset's
    labels for ``gather``.
    """
    opened = _opened(model_path, dataset_path, config, plan, progress)
    (work / FACTS_FILE).write_text(opened.facts.model_dump_json())
    if plan.capture_ranges:
        labels = opened.dataset_labels
        np.savez(work / DATASET_LABELS_FILE, allow_pickle=False, **({} if labels is None else {"y": labels}))
        return
    captured = settle(opened.capture(), opened.dataset_labels, config)
    opened.clock.lap("capture")
    save_captured(work / CAPTURED_FILE, captured, opened.clock.marks)
    pairs = _save_td_pairs(work, config, plan, captured)
    if pairs is not None and not plan.td_ranges and opened.facts.td_unavailable is None:
        started = time.perf_counter()
        td, changes = transition_counts(
            opened.model, opened.bound, opened.plans, pairs, config, opened.progress
        )
        limit = transition_limit(opened.model, opened.bound, opened.plans, pairs, config, opened.progress)
        _save_td(work / TD_PREPARED_FILE, td, changes, time.perf_counter() - started, limit)


def run_capture_block(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    index: int,
    out_path: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """Capture block ``index``: its samples' patterns, layer health and outputs (loads the model)."""
    started = time.perf_counter()
    opened = _opened(model_path, dataset_path, config, plan, progress)
    capture = opened.capture(plan.capture_ranges[index])
    save_capture(out_path, capture, time.perf_counter() - started)


def gather(
    config: AnalysisConfig, plan: ChunkPlan, work: Path, progress: ProgressCallback | None = None
) -> None:
    """Join the capture blocks into the whole dataset's capture, settle its labels and write
    ``captured.npz`` and the TD pairs (no model needed)."""
    report = progress or no_progress
    report("gather", 0.0)
    device = torch.device("cpu")
    seconds = [0.0]

    def blocks() -> Iterator[DatasetCapture]:
        for index, (start, stop) in enumerate(plan.capture_ranges):
            part, took = load_capture(work / chunk_file("capture", index), device)
            if part.store.n_samples != stop - start:
                raise internal(
                    f"capture block {index}: expected {stop - start} samples, got {part.store.n_samples}"
                )
            seconds[0] += took
            report("gather", (index + 1) / (len(plan.capture_ranges) + 1))
            yield part

    joined = DatasetCapture.join(blocks(), plan.samples, device)
    with np.load(work / DATASET_LABELS_FILE, allow_pickle=False) as data:
        dataset_labels = data["y"] if "y" in data.files else None
    captured = settle(joined, dataset_labels, config)
    save_captured(work / CAPTURED_FILE, captured, {"capture": seconds[0]})
    _save_td_pairs(work, config, plan, captured)
    report("gather", 1.0)


def _save_td_pairs(
    work: Path, config: AnalysisConfig, plan: ChunkPlan, captured: Captured
) -> torch.Tensor | None:
    if config.transition_density is None:
        return None
    pairs = transition_pairs(config, captured)
    if pairs.shape[0] != plan.td_pairs:
        raise internal(f"plan: expected {plan.td_pairs} TD pairs, the config gives {pairs.shape[0]}")
    np.savez(work / TD_PAIRS_FILE, allow_pickle=False, pairs=pairs.numpy())
    return pairs


def run_ps_block(
    captured_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    index: int,
    out_path: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """PS block ``index``: exact equal-neuron count histograms of its rows of the all-pairs matrix,
    per pair kind (same / different label), in total and per layer."""
    started = time.perf_counter()
    device = torch_device(config.device)
    captured, _ = load_captured(captured_path, device)
    report = progress or no_progress
    counts = all_pairs_histograms(
        captured.capture.store,
        captured.labels,
        rows=plan.ps_rows[index],
        device=device,
        progress=lambda fraction: report("pattern_similarity", fraction),
    )
    np.savez(
        out_path,
        allow_pickle=False,
        total=torch.stack([h.bins for h in counts.totals]).cpu().numpy(),
        layers=torch.stack([torch.cat([h.bins for h in hists]) for hists in counts.per_layer]).cpu().numpy(),
        seconds=np.float64(time.perf_counter() - started),
    )


def run_td_block(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    td_pairs_path: Path,
    index: int,
    out_path: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """TD block ``index``: TD and neuron changes of its block of the TD pairs (loads the model);
    empty where the model cannot run TD (``facts.td_unavailable``: the report says why)."""
    started = time.perf_counter()
    start, stop = plan.td_ranges[index]
    opened = _opened(model_path, dataset_path, config, plan, progress)
    if opened.facts.td_unavailable is not None:
        empty = torch.zeros(0, dtype=torch.int64)
        _save_td(out_path, empty, empty, time.perf_counter() - started, None)
        return
    with np.load(td_pairs_path, allow_pickle=False) as data:
        pairs = torch.from_numpy(array(data, "pairs", np.int64, 2)[start:stop])
    if pairs.shape != (stop - start, 2):
        raise internal(
            f"td pairs: expected [{stop - start}, 2] pairs for block {index}, got {list(pairs.shape)}"
        )
    td, changes = transition_counts(opened.model, opened.bound, opened.plans, pairs, config, opened.progress)
    limit = transition_limit(opened.model, opened.bound, opened.plans, pairs, config, opened.progress)
    _save_td(out_path, td, changes, time.perf_counter() - started, limit)


def _save_td(
    path: Path, td: torch.Tensor, changes: torch.Tensor, seconds: float, limit: LimitResult | None
) -> None:
    converged = save_limit(limit) if limit is not None else {}
    np.savez(
        path,
        allow_pickle=False,
        td=td.numpy(),
        neuron_changes=changes.numpy(),
        seconds=np.float64(seconds),
        **converged,
    )


def merge(
    config: AnalysisConfig, plan: ChunkPlan, work: Path, progress: ProgressCallback | None = None
) -> Report:
    """The report, built once from ``facts.json``, ``captured.npz`` and every block's result
    (pattern similarity is computed here when it was not split)."""
    report = progress or no_progress
    clock = StageClock()
    facts = ReportFacts.model_validate_json((work / FACTS_FILE).read_text())
    device = torch_device(config.device)
    captured, timings = load_captured(work / CAPTURED_FILE, device)
    if plan.ps_rows:
        counts = PairKindHistograms.empty(captured.capture.store.neurons)
        for index in range(len(plan.ps_rows)):
            part, seconds = _ps_histograms(work / chunk_file("ps", index), captured.capture.store.neurons)
            counts.add(part)
            timings["pattern_similarity"] = timings.get("pattern_similarity", 0.0) + seconds
        similarity = counts.summary(config.lambdas)
    else:
        similarity = similarity_of(captured, config, report)
    transition = (
        None
        if facts.td_unavailable is not None
        else _merged_transition(config, plan, work, captured, timings)
    )
    clock.marks = dict(timings)
    clock.started -= sum(timings.values())  # total: the seconds of every stage, this one included
    clock.lap("pattern_similarity")
    return assemble_report(config, facts, captured, similarity, transition, clock)


def _ps_histograms(path: Path, neurons: tuple[int, ...]) -> tuple[PairKindHistograms, float]:
    counts = PairKindHistograms.empty(neurons)
    with np.load(path, allow_pickle=False) as data:
        total, layers = array(data, "total", np.int64, 2), array(data, "layers", np.int64, 2)
        seconds = float(data["seconds"])
    expected = ((2, sum(neurons) + 1), (2, sum(m + 1 for m in neurons)))
    if (total.shape, layers.shape) != expected:
        raise internal(
            f"{path.name}: expected histograms of shapes {expected}, got {(total.shape, layers.shape)}"
        )
    for kind in range(2):
        counts.totals[kind].bins = torch.from_numpy(total[kind].copy())
        offset = 0
        for hist in counts.per_layer[kind]:
            hist.bins = torch.from_numpy(layers[kind, offset : offset + hist.neurons + 1].copy())
            offset += hist.neurons + 1
    return counts, seconds


def _merged_transition(
    config: AnalysisConfig, plan: ChunkPlan, work: Path, captured: Captured, timings: dict[str, float]
) -> TransitionResult | None:
    if config.transition_density is None:
        return None
    with np.load(work / TD_PAIRS_FILE, allow_pickle=False) as data:
        pairs = torch.from_numpy(array(data, "pairs", np.int64, 2))
    ranges = plan.td_ranges or [(0, plan.td_pairs)]
    paths = [work / chunk_file("td", i) for i in range(len(plan.td_ranges))] or [work / TD_PREPARED_FILE]
    td_parts, change_parts, limits = [], [], []
    for (start, stop), path in zip(ranges, paths, strict=True):
        with np.load(path, allow_pickle=False) as data:
            td, changes = array(data, "td", np.int64, 1), array(data, "neuron_changes", np.int64, 1)
            timings["transition_density"] = timings.get("transition_density", 0.0) + float(data["seconds"])
            if config.transition_density.converged:
                limits.append(load_limit(data, stop - start, path.name))
        if td.shape != (stop - start,) or changes.shape != (stop - start,):
            raise internal(f"{path.name}: expected {stop - start} TD values, got {td.shape[0]}")
        td_parts.append(torch.from_numpy(td))
        change_parts.append(torch.from_numpy(changes))
    td_all, changes_all = torch.cat(td_parts), torch.cat(change_parts)
    if td_all.shape[0] != pairs.shape[0]:
        raise internal(f"merge: expected {pairs.shape[0]} TD values, the blocks hold {td_all.shape[0]}")
    points = config.transition_density.points
    limit = join_limits(limits) if limits else None
    return transition_result(pairs, points, td_all, changes_all, captured.capture, captured.labels, limit)
