"""A large analysis in stages that can run in parallel: prepare, PS and TD chunks, merge.

The stages and the plan are described in :mod:`worker.chunking`. Each function here reads and
writes plain files (JSON and ``.npz`` arrays loaded with ``allow_pickle=False``), so the stages can
run in separate processes on separate machines; none of them knows about Celery.

Pattern similarity merges exactly: a chunk holds integer histograms of equal-neuron counts per
pair kind and layer, which add up to the histograms of the whole matrix. Transition density
chunks hold per-pair integers, laid end to end in pair order. Everything else in the report comes
from ``prepare``, computed by the same functions as :func:`worker.engine.analyze`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from worker.chunking import BASE_REPORT_FILE, PATTERNS_FILE, TD_PAIRS_FILE, ChunkKind, ChunkPlan
from worker.engine.analysis import (
    ProgressCallback,
    assemble_report,
    capture_stage,
    load_inputs,
    pairs_on_device,
    plan_layers,
    ps_distance_correlation,
    transition_counts,
    transition_density,
    transition_pairs,
    transition_result,
)
from worker.engine.capture.base import ActivationLayer
from worker.engine.capture.loader import open_model
from worker.engine.errors import AnalysisError
from worker.engine.metrics.pairs import AllPairs, select_pairs
from worker.engine.metrics.patterns import PatternStore, unpack_bits
from worker.engine.metrics.similarity import (
    CountHistogram,
    KindSummary,
    SimilaritySummary,
    add_by_kind,
    default_row_block,
    layer_block,
    pair_kinds,
    pattern_similarity,
)
from worker.engine.prediction import distance_summary
from worker.engine.report_builder import (
    TransitionResult,
    similarity_section,
    transition_section,
)

#: Bytes of unpacked patterns rebuilt at a time when a PS chunk loads the stored patterns.
_LOAD_BYTES = 64 * 2**20


def _internal(message: str) -> AnalysisError:
    return AnalysisError(message, code="internal_error")


# -- prepare ------------------------------------------------------------------------------------


def prepare(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """Stage 1: capture the dataset once and write the base report and the chunks' inputs.

    Writes ``base-report.json`` (the whole report, with the split parts left to :func:`merge`),
    ``patterns.npz`` when PS is split (every sample's pattern and the labels) and
    ``td-pairs.npz`` when TD is split (the TD pairs with their label kind, PS and distance).
    """
    stage = capture_stage(model_path, dataset_path, config, progress=progress)
    bound, capture, labels, clock = stage.bound, stage.capture, stage.labels, stage.clock
    if bound.samples != plan.samples:
        raise _internal(f"plan: expected {bound.samples} samples, the plan was made for {plan.samples}")

    pairs = select_pairs(config.pairs, bound.samples, labels)
    if plan.ps_rows:
        if not isinstance(pairs, AllPairs):
            raise _internal("plan: PS row blocks need pairs 'all'")
        similarity = _placeholder_similarity(config.lambdas, len(stage.plans))
        save_patterns(out_dir / PATTERNS_FILE, capture.store, labels)
    else:
        similarity = pattern_similarity(
            capture.store,
            pairs,
            config.lambdas,
            progress=lambda fraction: stage.progress("pattern_similarity", fraction),
        )
    distances = distance_summary(capture.outputs, pairs_on_device(pairs, capture.outputs.device))
    correlation = ps_distance_correlation(capture, pairs, labels, config.seed)
    clock.lap("pattern_similarity")

    transition = None
    if config.transition_density is not None:
        chosen = transition_pairs(stage)
        if chosen.shape[0] != plan.td_pairs:
            raise _internal(f"plan: expected {plan.td_pairs} TD pairs, the config gives {chosen.shape[0]}")
        if plan.td_ranges:
            zeros = torch.zeros(chosen.shape[0], dtype=torch.int64)
            points = config.transition_density.points
            _save_td_pairs(
                out_dir / TD_PAIRS_FILE, transition_result(chosen, points, zeros, zeros, capture, labels)
            )
        else:
            transition = transition_density(
                stage.model, bound, stage.plans, chosen, config, capture, labels, stage.progress
            )
    clock.lap("transition_density")

    report = assemble_report(stage, similarity, distances, correlation, transition)
    (out_dir / BASE_REPORT_FILE).write_text(report.to_json(indent=None))


def _placeholder_similarity(lambdas: Sequence[float], layers: int) -> SimilaritySummary:
    nans = [math.nan] * layers
    nan = KindSummary(0, math.nan, math.nan, [math.nan] * len(lambdas), nans, nans)
    return SimilaritySummary("all", list(lambdas), nan, nan, nan)


def save_patterns(path: Path, store: PatternStore, labels: torch.Tensor) -> None:
    """Every sample's pattern as stored (bit-packed layers stay packed) and the ``[N]`` labels."""
    index = torch.arange(store.n_samples)
    arrays: dict[str, np.ndarray] = {
        "neurons": np.asarray(store.neurons, dtype=np.int64),
        "regions": np.asarray(store.regions, dtype=np.int64),
        "labels": labels.to(device="cpu", dtype=torch.int64).numpy(),
    }
    for layer in range(store.num_layers):
        data = store.packed_rows(layer, index) if store.is_packed(layer) else store.rows(layer, index)
        arrays[f"layer{layer}"] = data.cpu().numpy()
    np.savez(path, allow_pickle=False, **arrays)


def load_patterns(path: Path, device: torch.device) -> tuple[PatternStore, torch.Tensor]:
    """The :class:`PatternStore` and labels :func:`save_patterns` wrote, on ``device``."""
    with np.load(path, allow_pickle=False) as data:
        neurons = [int(m) for m in _array(data, "neurons", np.int64, 1)]
        regions = [int(r) for r in _array(data, "regions", np.int64, 1)]
        labels = torch.from_numpy(_array(data, "labels", np.int64, 1))
        store = PatternStore(labels.numel(), neurons, regions, device=device)
        layers = [_array(data, f"layer{layer}", np.uint8, 2) for layer in range(len(neurons))]
    step = max(1, _LOAD_BYTES // max(store.total_neurons, 1))
    for start in range(0, store.n_samples, step):
        batch = []
        for layer, stored in enumerate(layers):
            rows = torch.from_numpy(stored[start : start + step])
            batch.append(unpack_bits(rows, neurons[layer]) if store.is_packed(layer) else rows)
        store.append(batch)
    return store, labels.to(device)


def _array(data: Any, key: str, dtype: type[np.generic], ndim: int) -> np.ndarray:
    if key not in data.files:
        raise _internal(f"expected an array {key!r} in the stage file, got keys {sorted(data.files)}")
    array = data[key]
    if array.dtype != dtype or array.ndim != ndim:
        raise _internal(
            f"{key}: expected a {ndim}-d {np.dtype(dtype)} array, got {array.ndim}-d {array.dtype}"
        )
    return np.ascontiguousarray(array)


def _save_td_pairs(path: Path, result: TransitionResult) -> None:
    np.savez(
        path,
        pairs=result.pairs.numpy(),
        same_label=result.same_label.numpy(),
        ps=result.ps.numpy(),
        distance=result.distance.numpy(),
    )


# -- chunks -------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_ps_chunk(
    patterns_path: Path,
    plan: ChunkPlan,
    index: int,
    out_path: Path,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> None:
    """PS chunk ``index``: exact equal-neuron count histograms of its rows of the all-pairs matrix,
    per pair kind (same / different label), in total and per layer."""
    started = time.perf_counter()
    rows_start, rows_stop = plan.ps_rows[index]
    target = resolve_device(device)
    store, labels = load_patterns(patterns_path, target)
    n = store.n_samples
    totals = [CountHistogram(store.total_neurons, target) for _ in range(2)]
    per_layer = [[CountHistogram(m, target) for m in store.neurons] for _ in range(2)]
    block_rows = default_row_block(n)
    for first in range(rows_start, rows_stop, block_rows):
        rows = (first, min(rows_stop, first + block_rows))
        kinds = pair_kinds(labels, rows)
        total = torch.zeros(rows[1] - first, n - first, dtype=torch.int64, device=target)
        for layer in range(store.num_layers):
            block = layer_block(store, layer, rows, first, target, None)
            add_by_kind(block, kinds, [hists[layer] for hists in per_layer])
            total += block
        add_by_kind(total, kinds, totals)
        if progress is not None:
            progress("pattern_similarity", (rows[1] - rows_start) / max(rows_stop - rows_start, 1))
    np.savez(
        out_path,
        total=torch.stack([h.bins for h in totals]).cpu().numpy(),
        layers=torch.stack([torch.cat([h.bins for h in hists]) for hists in per_layer]).cpu().numpy(),
        seconds=np.float64(time.perf_counter() - started),
    )


def run_td_chunk(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    plan: ChunkPlan,
    td_pairs_path: Path,
    index: int,
    out_path: Path,
    progress: ProgressCallback | None = None,
) -> None:
    """TD chunk ``index``: TD and neuron changes of its block of the TD pairs (loads the model)."""
    started = time.perf_counter()
    start, stop = plan.td_ranges[index]
    bound, _ = load_inputs(model_path, dataset_path, check_model=True)
    model = open_model(
        model_path,
        device=config.device,
        layer_names=config.layers,
        example=bound.batch(0, min(2, bound.samples)),
    )
    plans = plan_layers(model, config)
    with np.load(td_pairs_path, allow_pickle=False) as data:
        pairs = torch.from_numpy(_array(data, "pairs", np.int64, 2)[start:stop])
    if pairs.shape != (stop - start, 2):
        raise _internal(
            f"td pairs: expected [{stop - start}, 2] pairs for chunk {index}, got {list(pairs.shape)}"
        )
    td, changes = transition_counts(model, bound, plans, pairs, config, progress or (lambda s, f: None))
    np.savez(
        out_path,
        td=td.numpy(),
        neuron_changes=changes.numpy(),
        seconds=np.float64(time.perf_counter() - started),
    )


# -- merge --------------------------------------------------------------------------------------


def merge(
    plan: ChunkPlan,
    base_path: Path,
    chunk_paths: dict[tuple[ChunkKind, int], Path],
    td_pairs_path: Path | None = None,
) -> Report:
    """Stage 3: the base report completed with the chunks' pattern similarity and transition density.

    ``chunk_paths`` maps every ``(kind, index)`` of ``plan.chunks()`` to its result file.
    """
    started = time.perf_counter()
    base = Report.model_validate_json(base_path.read_text())
    missing = [chunk for chunk in plan.chunks() if chunk not in chunk_paths]
    if missing:
        raise _internal(f"merge: expected a result for every chunk, missing {missing}")
    update: dict[str, Any] = {}
    seconds = {"ps": 0.0, "td": 0.0}
    if plan.ps_rows:
        ps_paths = [chunk_paths["ps", i] for i in range(len(plan.ps_rows))]
        summary, seconds["ps"] = _merged_similarity(base, ps_paths)
        layers = [ActivationLayer(info.name, info.op_type, tuple(info.shape)) for info in base.model.layers]
        update["pattern_similarity"] = similarity_section(summary, layers)
    if plan.td_ranges:
        if td_pairs_path is None or base.provenance.config.transition_density is None:
            raise _internal("merge: TD chunks need the TD pairs file and a transition_density config")
        result, seconds["td"] = _merged_transition(
            plan,
            base.provenance.config.transition_density.points,
            td_pairs_path,
            [chunk_paths["td", i] for i in range(len(plan.td_ranges))],
        )
        update["transition_density"] = transition_section(result)
        update["prediction_distance"] = base.prediction_distance.model_copy(
            update={"spearman_vs_td": result.spearman_distance}
        )
    timings = base.timings
    update["timings"] = timings.model_copy(
        update={
            "pattern_similarity_s": timings.pattern_similarity_s + seconds["ps"],
            "transition_density_s": timings.transition_density_s + seconds["td"],
            "total_s": timings.total_s + seconds["ps"] + seconds["td"] + time.perf_counter() - started,
        }
    )
    update["provenance"] = base.provenance.model_copy(
        update={"created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    merged = base.model_copy(update=update)
    return Report.model_validate_json(merged.to_json(indent=None))


def _merged_similarity(base: Report, paths: list[Path]) -> tuple[SimilaritySummary, float]:
    neurons = [layer.neurons for layer in base.model.layers]
    total = np.zeros((2, sum(neurons) + 1), dtype=np.int64)
    layers = np.zeros((2, sum(m + 1 for m in neurons)), dtype=np.int64)
    seconds = 0.0
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            for name, into in (("total", total), ("layers", layers)):
                part = _array(data, name, np.int64, 2)
                if part.shape != into.shape:
                    raise _internal(f"{path.name}: expected {name} of shape {into.shape}, got {part.shape}")
                into += part
            seconds += float(data["seconds"])
    same, different = (_histograms(total[kind], layers[kind], neurons) for kind in range(2))
    lambdas = base.provenance.config.lambdas
    both = [a.merged(b) for a, b in zip(same[1], different[1], strict=True)]
    everything = KindSummary.from_histograms(same[0].merged(different[0]), both, lambdas)
    return (
        SimilaritySummary(
            "all",
            list(lambdas),
            everything,
            KindSummary.from_histograms(same[0], same[1], lambdas),
            KindSummary.from_histograms(different[0], different[1], lambdas),
        ),
        seconds,
    )


def _histograms(
    total: np.ndarray, layers: np.ndarray, neurons: list[int]
) -> tuple[CountHistogram, list[CountHistogram]]:
    whole = CountHistogram(sum(neurons))
    whole.bins = torch.from_numpy(total.copy())
    per_layer = []
    offset = 0
    for width in neurons:
        hist = CountHistogram(width)
        hist.bins = torch.from_numpy(layers[offset : offset + width + 1].copy())
        per_layer.append(hist)
        offset += width + 1
    return whole, per_layer


def _merged_transition(
    plan: ChunkPlan, points: int, td_pairs_path: Path, paths: list[Path]
) -> tuple[TransitionResult, float]:
    with np.load(td_pairs_path, allow_pickle=False) as data:
        pairs = torch.from_numpy(_array(data, "pairs", np.int64, 2))
        same = torch.from_numpy(_array(data, "same_label", np.bool_, 1))
        ps = torch.from_numpy(_array(data, "ps", np.float64, 1))
        distance = torch.from_numpy(_array(data, "distance", np.float64, 1))
    td_parts, change_parts = [], []
    seconds = 0.0
    for (start, stop), path in zip(plan.td_ranges, paths, strict=True):
        with np.load(path, allow_pickle=False) as data:
            td, changes = _array(data, "td", np.int64, 1), _array(data, "neuron_changes", np.int64, 1)
            seconds += float(data["seconds"])
        if td.shape != (stop - start,) or changes.shape != (stop - start,):
            raise _internal(f"{path.name}: expected {stop - start} TD values, got {td.shape[0]}")
        td_parts.append(torch.from_numpy(td))
        change_parts.append(torch.from_numpy(changes))
    td_all, changes_all = torch.cat(td_parts), torch.cat(change_parts)
    if td_all.shape[0] != pairs.shape[0]:
        raise _internal(f"merge: expected {pairs.shape[0]} TD values, the chunks hold {td_all.shape[0]}")
    result = TransitionResult(
        pairs=pairs,
        points=points,
        td=td_all,
        neuron_changes=changes_all,
        same_label=same,
        ps=ps,
        distance=distance,
    )
    return result, seconds


def read_plan(path: Path) -> ChunkPlan:
    return ChunkPlan.model_validate(json.loads(path.read_text()))
