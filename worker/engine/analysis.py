"""The analysis pipeline: dataset and model in, :class:`~neuronscope.contracts.report.Report` out.

The pipeline's steps, used alike by :func:`analyze` (every step once, in this process) and by the
stages of a split analysis (:mod:`worker.engine.stages`, planned by :mod:`worker.engine.plan`):

1. :func:`open_analysis`: check and load the inputs, open the model, choose Γ per layer.
2. :func:`capture_dataset`: push samples through the model batch by batch and keep only the
   region patterns (at most one byte per neuron-sample), the layer-health counts and the model
   outputs; :func:`settle` joins a capture to its labels.
3. pattern similarity on the patterns; transition density streams interpolated points through
   the model pair by pair (:func:`transition_counts`).
4. :func:`assemble_report`: prediction distance, the PS-distance correlation and the report,
   built once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from neuronscope.contracts.config import DEFAULT_BREAKPOINTS, AnalysisConfig, PairSample
from neuronscope.contracts.post_space import out_of_range
from neuronscope.contracts.report import Report
from neuronscope.errors import InvalidInput
from neuronscope.validation import check_model_file, load_dataset
from worker.engine.capture.base import ActivationLayer, CaptureModel, CaptureResult, InputSpec
from worker.engine.capture.loader import open_model
from worker.engine.converged import CodedLayer, converged_counts
from worker.engine.death_sections import with_death
from worker.engine.errors import AnalysisError
from worker.engine.inputs import BoundInputs, bind_inputs
from worker.engine.interpolation import interpolation_space
from worker.engine.label_sections import with_chance, with_flat
from worker.engine.metrics.chance import LabelRegionCounts
from worker.engine.metrics.correlation import spearman
from worker.engine.metrics.death import ValueAccumulator, units_of
from worker.engine.metrics.flat import FlatCounts, flat_regions
from worker.engine.metrics.health import HealthAccumulator, LayerHealthStats
from worker.engine.metrics.pairs import AllPairs, PairLists, PairSets, select_pairs
from worker.engine.metrics.patterns import PatternStore, RegionCoder
from worker.engine.metrics.similarity import SimilaritySummary, pair_counts, pattern_similarity
from worker.engine.metrics.transition import TransitionCounter, path_transitions
from worker.engine.metrics.transition_limit import LimitResult
from worker.engine.prediction import DistanceSummary, distance_summary, pair_distances
from worker.engine.probability_section import with_probabilities
from worker.engine.report_builder import (
    Correlation,
    ReportFacts,
    ReportInputs,
    TransitionResult,
    build_report,
)

#: Called with a stage name and the share of that stage done (0..1); it may raise to cancel.
ProgressCallback = Callable[[str, float], None]

#: Random pairs behind the rank correlation of PS with prediction distance.
CORRELATION_PAIRS = 200_000
#: Bytes of unpacked patterns moved at a time when captures are joined.
_JOIN_BYTES = 64 * 2**20


def no_progress(stage: str, fraction: float) -> None:
    return None


@dataclass
class StageClock:
    started: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = self.marks.get(name, 0.0) + now - self._last
        self._last = now

    def timings(self) -> dict[str, float]:
        return {**self.marks, "total": time.perf_counter() - self.started}


@dataclass(frozen=True)
class LayerPlan:
    """One analysed layer, its breakpoints Γ and the coder that turns values into region indices."""

    layer: ActivationLayer
    breakpoints: list[float]
    coder: RegionCoder


def analyze(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    *,
    progress: ProgressCallback | None = None,
    trusted_model: bool = False,
) -> Report:
    """Run the whole analysis of ``model_path`` (ONNX or TorchScript) on ``dataset_path`` (.npz/.npy).

    Both files are checked as untrusted uploads first (``neuronscope.validation``). With
    ``trusted_model`` (a local file the caller vouches for, as in the CLI) the model check is
    skipped and ONNX weights stored as external data are read from the model's directory.

    This is the staged pipeline with one block of each kind (:mod:`worker.engine.plan`), run in
    this process.

    Raises:
        AnalysisError: the inputs cannot be analysed as given; ``code`` says why.
    """
    opened = open_analysis(model_path, dataset_path, config, progress=progress, trusted_model=trusted_model)
    captured = settle(opened.capture(), opened.dataset_labels, config)
    opened.clock.lap("capture")
    similarity = similarity_of(captured, config, opened.progress)
    opened.clock.lap("pattern_similarity")
    transition = None
    if config.transition_density is not None and opened.facts.td_unavailable is None:
        pairs = transition_pairs(config, captured)
        td, changes = transition_counts(
            opened.model, opened.bound, opened.plans, pairs, config, opened.progress
        )
        limit = transition_limit(opened.model, opened.bound, opened.plans, pairs, config, opened.progress)
        transition = transition_result(
            pairs, config.transition_density.points, td, changes, captured.capture, captured.labels, limit
        )
    opened.clock.lap("transition_density")
    return assemble_report(config, opened.facts, captured, similarity, transition, opened.clock)


@dataclass
class OpenedAnalysis:
    """The checked inputs, the open model and Γ per layer: what every stage that runs the model
    starts from."""

    config: AnalysisConfig
    bound: BoundInputs
    dataset_labels: np.ndarray | None
    model: CaptureModel
    plans: list[LayerPlan]
    facts: ReportFacts
    clock: StageClock
    progress: ProgressCallback

    def capture(self, rows: tuple[int, int] | None = None) -> DatasetCapture:
        """Capture samples ``rows`` (``[start, stop)``, default all) in batches of ``batch_size``."""
        return capture_dataset(
            self.model,
            self.bound,
            self.plans,
            self.config,
            self.progress,
            rows=rows,
            dataset_labels=self.dataset_labels,
        )


def open_analysis(
    model_path: Path,
    dataset_path: Path,
    config: AnalysisConfig,
    *,
    progress: ProgressCallback | None = None,
    trusted_model: bool = False,
) -> OpenedAnalysis:
    """Load and check the inputs, open the model and plan its layers."""
    report_progress: ProgressCallback = progress or no_progress
    clock = StageClock()
    report_progress("load", 0.0)
    binding = load_inputs(model_path, dataset_path, check_model=not trusted_model)
    model = open_model(
        model_path,
        device=config.device,
        layer_names=config.layers,
        example=binding.example,
        trusted=trusted_model,
        capture_points=config.capture_points,
    )
    bound, dataset_labels = binding.bound(), binding.labels
    plans = plan_layers(model, config)
    facts = ReportFacts.of(model, [(p.layer, p.breakpoints) for p in plans], model_path, dataset_path)
    report_progress("load", 1.0)
    clock.lap("load")
    return OpenedAnalysis(config, bound, dataset_labels, model, plans, facts, clock, report_progress)


@dataclass(frozen=True)
class Captured:
    """A whole dataset's capture with its labels: ``labels`` ``[N]`` int64 on the CPU, from the
    dataset or predicted, and the top-1 accuracy against dataset labels where it is defined."""

    capture: DatasetCapture
    labels: torch.Tensor
    labels_source: Literal["dataset", "predicted"]
    accuracy: float | None

    @property
    def samples(self) -> int:
        return self.capture.store.n_samples


def settle(capture: DatasetCapture, dataset_labels: np.ndarray | None, config: AnalysisConfig) -> Captured:
    """Join a complete capture to its labels (the dataset's, or the model's predicted classes)."""
    labels, source = resolve_labels(capture.outputs, dataset_labels, config)
    accuracy = top1_accuracy(capture.outputs, dataset_labels) if source == "dataset" else None
    return Captured(capture, labels, source, accuracy)


def similarity_of(
    captured: Captured, config: AnalysisConfig, progress: ProgressCallback
) -> SimilaritySummary:
    """Pattern similarity over the pairs ``config.pairs`` asks for, in one block."""
    pairs = select_pairs(config.pairs, captured.samples, captured.labels)
    return pattern_similarity(
        captured.capture.store,
        pairs,
        config.lambdas,
        progress=lambda fraction: progress("pattern_similarity", fraction),
    )


def transition_pairs(config: AnalysisConfig, captured: Captured) -> torch.Tensor:
    """``[P, 2]`` the pairs whose segments transition density walks."""
    assert config.transition_density is not None
    chosen = select_pairs(config.transition_density.pairs, captured.samples, captured.labels)
    return chosen.materialize().random if isinstance(chosen, AllPairs) else chosen.random


def assemble_report(
    config: AnalysisConfig,
    facts: ReportFacts,
    captured: Captured,
    similarity: SimilaritySummary,
    transition: TransitionResult | None,
    clock: StageClock,
) -> Report:
    """The report, built once: prediction distance and the PS-distance correlation from the
    capture, with pattern similarity and transition density as computed (in one block or many)."""
    capture = captured.capture
    pairs = select_pairs(config.pairs, captured.samples, captured.labels)
    distances = distance_summary(capture.outputs, pairs_on_device(pairs, capture.outputs.device))
    correlation = ps_distance_correlation(capture, pairs, captured.labels, config.seed)
    clock.lap("pattern_similarity")
    report = build_report(
        ReportInputs(
            config=config,
            facts=facts,
            samples=captured.samples,
            labels_source=captured.labels_source,
            classes=int(torch.unique(captured.labels).numel()),
            accuracy=captured.accuracy,
            similarity=similarity,
            health=capture.health,
            distances=distances,
            correlation=correlation,
            transition=transition,
            timings=clock.timings(),
        )
    )
    chance = capture.label_counts.result(config.dying_threshold)
    report = with_probabilities(
        report, capture.outputs, pairs_on_device(pairs, capture.outputs.device), correlation, transition
    )
    report = with_flat(with_chance(report, chance), capture.flat.result())
    return with_death(report, capture.values, capture.health) if capture.values is not None else report


class DatasetBinding:
    """A checked dataset, bound to the inputs the model declares when the model is opened (its
    :meth:`example` is the example the front end discovers layers on), so the model is loaded once."""

    def __init__(self, arrays: Mapping[str, np.ndarray], labels: np.ndarray | None) -> None:
        self.arrays = arrays
        self.labels = labels
        self._bound: BoundInputs | None = None

    def example(self, declared: list[InputSpec]) -> Mapping[str, np.ndarray]:
        """Bind the dataset to ``declared`` and return its first samples (at most 2)."""
        self._bound = bind_inputs(self.arrays, declared)
        return self._bound.batch(0, min(2, self._bound.samples))

    def bound(self) -> BoundInputs:
        if self._bound is None:
            raise AnalysisError("the dataset was not bound to the model's inputs", code="internal_error")
        return self._bound


def load_inputs(model_path: Path, dataset_path: Path, *, check_model: bool) -> DatasetBinding:
    """Check the files as untrusted uploads (external data, custom ops, zip bombs), then load the
    dataset (bound to the model's inputs when the model is opened)."""
    try:
        if check_model:
            check_model_file(model_path)
        data = load_dataset(dataset_path)
    except InvalidInput as error:
        raise AnalysisError(error.message, code=error.code) from None
    return DatasetBinding(data.inputs, data.labels)


def plan_layers(model: CaptureModel, config: AnalysisConfig) -> list[LayerPlan]:
    """Γ for each captured layer; a ``breakpoints`` key that is neither a layer nor an op type is an
    error, and so is, in post space, a given breakpoint outside the layer's range of values (a
    layer name's Γ, or a Clip layer's, can only be checked once the model is open)."""
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(config.breakpoints) - names - set(DEFAULT_BREAKPOINTS) - {"clip"})
    if unknown:
        raise AnalysisError(
            f"breakpoints: expected keys naming an op type ({sorted(DEFAULT_BREAKPOINTS)}) or a layer "
            f"({sorted(names)}), got unknown {unknown}",
            code="unknown_layer",
        )
    plans = []
    for layer in model.layers:
        fallback = list(layer.default_breakpoints) if layer.default_breakpoints is not None else None
        params = dict(layer.params)
        breakpoints = config.breakpoints_for(layer.name, layer.op_type, fallback, params)
        given = layer.name in config.breakpoints or layer.op_type in config.breakpoints
        checked = given and config.space == "post"
        problem = out_of_range(layer.op_type, breakpoints, fallback, params) if checked else None
        if problem is not None:
            raise AnalysisError(
                f"breakpoints for layer {layer.name!r}: {problem}", code="breakpoints_invalid"
            )
        coder = RegionCoder(torch.tensor(breakpoints, dtype=torch.float64), device=model.device)
        plans.append(LayerPlan(layer, breakpoints, coder))
    return plans


def patterns_of(result: CaptureResult, plans: Sequence[LayerPlan], space: str) -> list[torch.Tensor]:
    """Per layer ``[B, M_l]`` uint8 region indices of one captured batch."""
    values = result.pre if space == "pre" else result.post
    return [plan.coder(v) for v, plan in zip(values, plans, strict=True)]


@dataclass
class DatasetCapture:
    """What one pass over the dataset keeps: patterns ``[N, M]``, health, outputs ``[N, D]``,
    region counts per label (the chance-corrected figures) and flat-region counts, all counted
    batch by batch in the pass itself so that blocks of samples add up."""

    store: PatternStore
    health: HealthAccumulator
    outputs: torch.Tensor
    label_counts: LabelRegionCounts
    flat: FlatCounts
    values: ValueAccumulator | None = None

    @classmethod
    def join(
        cls, parts: Iterable[DatasetCapture], samples: int, device: torch.device | str = "cpu"
    ) -> DatasetCapture:
        """The capture of consecutive sample ranges covering ``samples`` samples, in order, as one
        (on ``device``): patterns and outputs laid end to end, region counts added, value moments
        merged batch by batch in the same order as one pass, so every number is the one a single
        capture gives. ``parts`` is consumed one at a time (a generator that loads each part
        keeps one part's patterns in memory besides the joined ones)."""
        store: PatternStore | None = None
        states: list[dict[str, np.ndarray]] = []
        value_states: list[dict[str, np.ndarray] | None] = []
        outputs: list[torch.Tensor] = []
        label_counts: LabelRegionCounts | None = None
        flat: FlatCounts | None = None
        for part in parts:
            if store is None or label_counts is None or flat is None:
                store = PatternStore(samples, part.store.neurons, part.store.regions, device=device)
                label_counts = LabelRegionCounts(store.neurons, store.regions, device=device)
                flat = FlatCounts(store.neurons, part.flat.flat, device=device)
            step = max(1, _JOIN_BYTES // max(store.total_neurons, 1))
            for start in range(0, part.store.n_samples, step):
                index = torch.arange(start, min(start + step, part.store.n_samples))
                store.append_stored(
                    [part.store.stored_rows(layer, index) for layer in range(store.num_layers)]
                )
            states.append(part.health.state())
            value_states.append(part.values.state() if part.values is not None else None)
            outputs.append(part.outputs.to(device))
            label_counts.merge(part.label_counts)
            flat.merge(part.flat)
        if store is None or label_counts is None or flat is None or not store.complete:
            raise AnalysisError(
                f"capture: expected blocks covering {samples} samples, got {store.filled if store else 0}",
                code="internal_error",
            )
        health = HealthAccumulator.combine(store.neurons, store.regions, states, device=device)
        known = [state for state in value_states if state is not None]
        values = ValueAccumulator.combine(known, device=device) if len(known) == len(states) else None
        return cls(store, health, torch.cat(outputs), label_counts, flat, values)


def capture_dataset(
    model: CaptureModel,
    bound: BoundInputs,
    plans: Sequence[LayerPlan],
    config: AnalysisConfig,
    progress: ProgressCallback,
    *,
    rows: tuple[int, int] | None = None,
    dataset_labels: np.ndarray | None = None,
) -> DatasetCapture:
    """Push samples ``rows`` (``[start, stop)``, default the whole dataset) through the model once,
    in batches of ``config.batch_size`` counted from ``start``.

    Region counts per label use the labels :func:`settle` will give the samples: the dataset's
    ``[N]`` ``dataset_labels`` where ``config.labels`` is ``"dataset"``, else the predicted class.
    Captures of consecutive ranges that start on batch boundaries join into the whole dataset's
    capture, bit for bit (:meth:`DatasetCapture.join`).
    """
    start, stop = rows if rows is not None else (0, bound.samples)
    if not 0 <= start < stop <= bound.samples:
        raise AnalysisError(
            f"capture: expected rows within [0, {bound.samples}], got [{start}, {stop})",
            code="internal_error",
        )
    truth = _dataset_labels(dataset_labels, bound.samples) if config.labels == "dataset" else None
    neurons = [plan.layer.neurons for plan in plans]
    regions = [len(plan.breakpoints) + 1 for plan in plans]
    flat = [
        flat_regions(plan.layer.op_type, plan.breakpoints, config.space, dict(plan.layer.params))
        for plan in plans
    ]
    store = PatternStore(stop - start, neurons, regions, device=model.device)
    health = HealthAccumulator(neurons, regions, device=model.device)
    label_counts = LabelRegionCounts(neurons, regions, device=model.device)
    flat_counts = FlatCounts(neurons, flat, device=model.device)
    units = [units_of(plan.layer.shape) for plan in plans]
    values = ValueAccumulator(neurons, units, post_space=config.space == "post", device=model.device)
    outputs: list[torch.Tensor] = []
    for first in range(start, stop, config.batch_size):
        last = min(first + config.batch_size, stop)
        result = model.capture(bound.batch(first, last))
        patterns = patterns_of(result, plans, config.space)
        batch_outputs = result.outputs.reshape(result.outputs.shape[0], -1).float()
        store.append(patterns)
        health.update(patterns, result.pre, result.post)
        label_counts.update(patterns, predicted_labels(batch_outputs) if truth is None else truth[first:last])
        flat_counts.update(patterns)
        values.update(result.pre, result.post)
        outputs.append(batch_outputs)
        progress("capture", (last - start) / (stop - start))
    return DatasetCapture(store, health, torch.cat(outputs), label_counts, flat_counts, values)


def _dataset_labels(labels: np.ndarray | None, samples: int) -> torch.Tensor | None:
    """``[N]`` int64 dataset labels, checked to be one per sample; ``None`` without labels."""
    if labels is None:
        return None
    found = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if found.shape != (samples,):
        raise AnalysisError(
            f"labels: expected {samples} integer labels, got shape {tuple(found.shape)}",
            code="labels_invalid",
        )
    return found


def resolve_labels(
    outputs: torch.Tensor, dataset_labels: np.ndarray | None, config: AnalysisConfig
) -> tuple[torch.Tensor, Literal["dataset", "predicted"]]:
    if config.labels == "dataset" and dataset_labels is not None:
        labels = torch.as_tensor(np.asarray(dataset_labels), dtype=torch.int64)
        if labels.shape != (outputs.shape[0],):
            raise AnalysisError(
                f"labels: expected {outputs.shape[0]} integer labels, got shape {tuple(labels.shape)}",
                code="labels_invalid",
            )
        return labels, "dataset"
    return predicted_labels(outputs).cpu(), "predicted"


def predicted_labels(outputs: torch.Tensor) -> torch.Tensor:
    """``[N]`` int64 predicted classes: argmax of ``[N, D]`` outputs, or ``output > 0`` when D == 1."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).to(torch.int64)
    return outputs.argmax(dim=1)


def top1_accuracy(outputs: torch.Tensor, labels: np.ndarray | None) -> float | None:
    if labels is None or outputs.shape[1] < 2:
        return None
    truth = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=outputs.device)
    if int(truth.min()) < 0 or int(truth.max()) >= outputs.shape[1]:
        return None
    return float((outputs.argmax(dim=1) == truth).double().mean())


def pairs_on_device(pairs: PairSets, device: torch.device) -> PairSets:
    if isinstance(pairs, AllPairs):
        return AllPairs(pairs.labels.to(device))
    return pairs


def ps_distance_correlation(
    capture: DatasetCapture, pairs: PairSets, labels: torch.Tensor, seed: int
) -> Correlation:
    n = capture.store.n_samples
    if isinstance(pairs, AllPairs):
        total = n * (n - 1) // 2
        if total <= CORRELATION_PAIRS:
            chosen = pairs.materialize().random
        else:
            sampled = select_pairs(PairSample(count=CORRELATION_PAIRS, seed=seed), n, labels)
            assert isinstance(sampled, PairLists)
            chosen = sampled.random
    else:
        chosen = pairs.random
    ps = pair_counts(capture.store, chosen).sum(0).double().cpu() / capture.store.total_neurons
    distance = pair_distances(capture.outputs, chosen.to(capture.outputs.device)).cpu()
    same = labels[chosen[:, 0]] == labels[chosen[:, 1]]
    return Correlation(chosen, same, ps, distance, spearman(ps, distance))


def transition_density(
    model: CaptureModel,
    bound: BoundInputs,
    plans: Sequence[LayerPlan],
    pairs: torch.Tensor,
    config: AnalysisConfig,
    capture: DatasetCapture,
    labels: torch.Tensor,
    progress: ProgressCallback,
) -> TransitionResult:
    """TD and neuron changes for each of ``[P, 2]`` pairs (:func:`transition_counts`), with each
    pair's label kind, PS and prediction distance."""
    assert config.transition_density is not None
    td, changes = transition_counts(model, bound, plans, pairs, config, progress)
    limit = transition_limit(model, bound, plans, pairs, config, progress)
    return transition_result(pairs, config.transition_density.points, td, changes, capture, labels, limit)


def transition_counts(
    model: CaptureModel,
    bound: BoundInputs,
    plans: Sequence[LayerPlan],
    pairs: torch.Tensor,
    config: AnalysisConfig,
    progress: ProgressCallback,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` int64 TD and ``[P]`` int64 neuron changes of ``[P, 2]`` pairs, streaming ``points``
    points per pair.

    Whole paths share a model batch when ``points <= batch_size`` (``batch_size // points`` paths
    per batch, in order); longer paths go through in chunks with a :class:`TransitionCounter`.
    Memory never grows with P or with ``points``. Paths run between the inputs, or in the
    embedding space of a model with integer inputs (:mod:`worker.engine.interpolation`).
    """
    assert config.transition_density is not None
    points = config.transition_density.points
    space = interpolation_space(model, bound, pairs, config.batch_size)
    td = torch.zeros(pairs.shape[0], dtype=torch.int64)
    changes = torch.zeros(pairs.shape[0], dtype=torch.int64)
    total = max(pairs.shape[0], 1)
    if points <= config.batch_size:
        per_batch = config.batch_size // points
        for first in range(0, pairs.shape[0], per_batch):
            chunk = pairs[first : first + per_batch]
            path_td, path_changes = path_transitions(
                patterns_of(space.capture(space.paths(chunk, points)), plans, config.space), points
            )
            td[first : first + chunk.shape[0]] = path_td.cpu()
            changes[first : first + chunk.shape[0]] = path_changes.cpu()
            progress("transition_density", (first + chunk.shape[0]) / total)
    else:
        counter = TransitionCounter()
        for index, (i, j) in enumerate(pairs.tolist()):
            counter.reset()
            for start in range(0, points, config.batch_size):
                stop = min(start + config.batch_size, points)
                batch = space.path(i, j, points, start, stop)
                counter.update(patterns_of(space.capture(batch), plans, config.space))
            td[index], changes[index] = counter.transitions, counter.neuron_changes
            progress("transition_density", (index + 1) / total)
    return td, changes


def transition_limit(
    model: CaptureModel,
    bound: BoundInputs,
    plans: Sequence[LayerPlan],
    pairs: torch.Tensor,
    config: AnalysisConfig,
    progress: ProgressCallback,
) -> LimitResult | None:
    """The converged TD of ``[P, 2]`` pairs (:mod:`worker.engine.converged`), None when the config
    does not ask for it."""
    td_config = config.transition_density
    if td_config is None or not td_config.converged:
        return None
    space = interpolation_space(model, bound, pairs, config.batch_size)
    layers = [CodedLayer(p.layer.op_type, p.layer.neurons, p.breakpoints, p.coder) for p in plans]
    return converged_counts(
        space,
        pairs,
        layers,
        td_config,
        config.space,
        config.batch_size,
        lambda fraction: progress("transition_density", fraction),
    )


def transition_result(
    pairs: torch.Tensor,
    points: int,
    td: torch.Tensor,
    changes: torch.Tensor,
    capture: DatasetCapture,
    labels: torch.Tensor,
    limit: LimitResult | None = None,
) -> TransitionResult:
    """TD and neuron changes of ``[P, 2]`` pairs with each pair's label kind, PS and distance, and
    their converged TD when computed."""
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    ps = pair_counts(capture.store, pairs).sum(0).double().cpu() / capture.store.total_neurons
    distance = pair_distances(capture.outputs, pairs.to(capture.outputs.device)).cpu()
    return TransitionResult(
        pairs=pairs,
        points=points,
        td=td,
        neuron_changes=changes,
        same_label=same,
        ps=ps,
        distance=distance,
        limit=limit,
    )


__all__ = [
    "DatasetCapture",
    "DistanceSummary",
    "LayerHealthStats",
    "ProgressCallback",
    "SimilaritySummary",
    "analyze",
    "capture_dataset",
    "plan_layers",
    "predicted_labels",
    "transition_counts",
    "transition_density",
    "transition_limit",
    "transition_result",
]
