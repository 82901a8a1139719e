"""Assemble the JSON report from the pipeline's results."""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from neuronscope import __version__
from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import (
    MAX_LISTED_NEURONS,
    DatasetSection,
    InputInfo,
    LayerHealth,
    LayerInfo,
    LayerSimilarity,
    ModelSection,
    PairKindStats,
    PairKindSummary,
    PairSampleRow,
    PatternSimilaritySection,
    PredictionDistanceKind,
    PredictionDistanceSection,
    Provenance,
    PsCurve,
    Report,
    TdKindStats,
    Timings,
    TransitionDensitySection,
    fair_shares,
)
from worker.engine.capture.base import ActivationLayer, CaptureModel
from worker.engine.converged_section import (
    converged_section,
    saturated,
    saturation_warning,
    with_converged_rows,
)
from worker.engine.interpolation import describe_space, unavailable
from worker.engine.metrics.correlation import spearman
from worker.engine.metrics.health import HealthAccumulator, LayerHealthStats
from worker.engine.metrics.similarity import KindSummary, SimilaritySummary
from worker.engine.metrics.transition_limit import LimitResult
from worker.engine.prediction import DistanceStats, DistanceSummary

#: Per-pair rows kept in the report for plots: the HTML report's size stays bounded.
SAMPLE_ROWS = 1_000


@dataclass(frozen=True)
class Correlation:
    """Per-pair PS ``[P]`` and prediction distance ``[P]`` over ``[P, 2]`` pairs, and their Spearman ρ."""

    pairs: torch.Tensor
    same_label: torch.Tensor
    ps: torch.Tensor
    distance: torch.Tensor
    spearman: float


@dataclass(frozen=True)
class TransitionResult:
    """Per-pair TD ``[P]``, neuron changes ``[P]``, PS ``[P]`` and distance ``[P]`` of ``[P, 2]`` pairs,
    and their converged TD when computed."""

    pairs: torch.Tensor
    points: int
    td: torch.Tensor
    neuron_changes: torch.Tensor
    same_label: torch.Tensor
    ps: torch.Tensor
    distance: torch.Tensor
    limit: LimitResult | None = None

    @property
    def spearman_distance(self) -> float:
        """Spearman correlation of TD with the prediction distance over the pairs."""
        return spearman(self.td.double(), self.distance)


class ReportFacts(BaseModel):
    """What the report says about the model and the dataset files, known once the model is open;
    saved by a split analysis's ``prepare`` stage for its ``merge``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSection
    dataset_sha256: str
    device: str
    runtime: str
    interpolation: Literal["inputs", "embedding"] = "inputs"
    interpolated: list[str] = []
    td_unavailable: str | None = None

    @classmethod
    def of(
        cls,
        model: CaptureModel,
        plans: Sequence[tuple[ActivationLayer, list[float]]],
        model_path: Path,
        dataset_path: Path,
    ) -> ReportFacts:
        return cls(
            model=ModelSection(
                format=model.format,
                sha256=file_sha256(model_path),
                inputs=[InputInfo(name=i.name, shape=list(i.shape), dtype=i.dtype) for i in model.inputs],
                layers=[
                    LayerInfo(
                        name=layer.name,
                        op_type=layer.op_type,
                        neurons=layer.neurons,
                        shape=list(layer.shape),
                        breakpoints=breakpoints,
                        params=dict(layer.params) or None,
                    )
                    for layer, breakpoints in plans
                ],
                neurons=sum(layer.neurons for layer, _ in plans),
                warnings=list(model.warnings),
            ),
            dataset_sha256=file_sha256(dataset_path),
            device=_device_name(model.device),
            runtime=model.runtime,
            interpolation=describe_space(model)[0],
            interpolated=describe_space(model)[1],
            td_unavailable=unavailable(model),
        )

    @property
    def layers(self) -> list[ActivationLayer]:
        return [ActivationLayer(info.name, info.op_type, tuple(info.shape)) for info in self.model.layers]


@dataclass(frozen=True)
class ReportInputs:
    config: AnalysisConfig
    facts: ReportFacts
    samples: int
    labels_source: Literal["dataset", "predicted"]
    classes: int
    accuracy: float | None
    similarity: SimilaritySummary
    health: HealthAccumulator
    distances: DistanceSummary
    correlation: Correlation
    transition: TransitionResult | None
    timings: dict[str, float]


def build_report(inputs: ReportInputs) -> Report:
    config = inputs.config
    health = inputs.health.result(config.dying_threshold, config.max_neuron_indices)
    layers = inputs.facts.layers
    return Report(
        model=inputs.facts.model,
        dataset=DatasetSection(
            samples=inputs.samples,
            labels_source=inputs.labels_source,
            classes=inputs.classes,
            accuracy=inputs.accuracy,
            sha256=inputs.facts.dataset_sha256,
        ),
        pattern_similarity=similarity_section(inputs.similarity, layers),
        transition_density=(
            transition_section(
                inputs.transition, inputs.facts.interpolation, inputs.facts.interpolated, config
            )
            if inputs.transition is not None
            else None
        ),
        transition_density_skipped=(
            inputs.facts.td_unavailable
            if config.transition_density is not None and inputs.transition is None
            else None
        ),
        layers=health_section(layers, health),
        prediction_distance=PredictionDistanceSection(
            random=_distance_kind(inputs.distances.random),
            same_label=_distance_kind(inputs.distances.same_label),
            different_label=_distance_kind(inputs.distances.different_label),
            spearman_vs_ps=inputs.correlation.spearman,
            spearman_vs_td=inputs.transition.spearman_distance if inputs.transition is not None else None,
            correlation_pairs=int(inputs.correlation.pairs.shape[0]),
            samples=_rows(
                inputs.correlation.pairs,
                inputs.correlation.same_label,
                inputs.correlation.ps,
                inputs.correlation.distance,
            ),
        ),
        provenance=_provenance(inputs),
        timings=Timings(
            load_s=inputs.timings.get("load", 0.0),
            capture_s=inputs.timings.get("capture", 0.0),
            pattern_similarity_s=inputs.timings.get("pattern_similarity", 0.0),
            transition_density_s=inputs.timings.get("transition_density", 0.0),
            total_s=inputs.timings.get("total", 0.0),
            transition_density_passes=(
                inputs.transition.limit.passes
                if inputs.transition is not None and inputs.transition.limit is not None
                else None
            ),
        ),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind_stats(summary: KindSummary, lambdas: list[float]) -> PairKindStats:
    return PairKindStats(
        pairs=summary.pairs,
        mean=summary.mean,
        std=summary.std,
        ps_d=PsCurve(lambda_=lambdas, value=summary.ps_d),
    )


def similarity_section(summary: SimilaritySummary, layers: list[ActivationLayer]) -> PatternSimilaritySection:
    kinds = (summary.random, summary.same_label, summary.different_label)
    per_layer = []
    for index, layer in enumerate(layers):
        random, same, different = (
            PairKindSummary(pairs=kind.pairs, mean=kind.layer_mean[index], std=kind.layer_std[index])
            for kind in kinds
        )
        per_layer.append(
            LayerSimilarity(name=layer.name, random=random, same_label=same, different_label=different)
        )
    return PatternSimilaritySection(
        pair_selection=summary.selection,
        random=_kind_stats(summary.random, summary.lambdas),
        same_label=_kind_stats(summary.same_label, summary.lambdas),
        different_label=_kind_stats(summary.different_label, summary.lambdas),
        per_layer=per_layer,
    )


def health_section(
    layers: list[ActivationLayer], health: list[LayerHealthStats], max_listed: int = MAX_LISTED_NEURONS
) -> list[LayerHealth]:
    """Per-layer health, the dead / dying index lists cut to ``max_listed`` indices over all layers
    together (a fair share each); counts stay exact and each layer says how many it left out."""
    wanted = [n for stats in health for n in (len(stats.dead_neurons), len(stats.dying_neurons))]
    kept = fair_shares(wanted, max_listed)
    return [
        LayerHealth(
            name=layer.name,
            op_type=layer.op_type,
            neurons=stats.neurons,
            dead_fraction=stats.dead_fraction,
            dying_fraction=stats.dying_fraction,
            dead_count=stats.dead_count,
            dying_count=stats.dying_count,
            dead_neurons=stats.dead_neurons[: kept[2 * k]],
            dying_neurons=stats.dying_neurons[: kept[2 * k + 1]],
            dead_neurons_omitted=stats.dead_count - kept[2 * k],
            dying_neurons_omitted=stats.dying_count - kept[2 * k + 1],
            region_occupancy=stats.region_occupancy,
            post_activation_mean=stats.post_activation_mean,
            post_activation_var=stats.post_activation_var,
            pre_activation_mean=stats.pre_activation_mean,
            pre_activation_var=stats.pre_activation_var,
        )
        for k, (layer, stats) in enumerate(zip(layers, health, strict=True))
    ]


def _distance_kind(stats: DistanceStats) -> PredictionDistanceKind:
    return PredictionDistanceKind(pairs=stats.pairs, mean=stats.mean, std=stats.std)


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else math.nan


def _median(values: torch.Tensor) -> float:
    """The midpoint median (mean of the two middle values for an even count)."""
    if not values.numel():
        return math.nan
    ordered = values.double().sort().values
    middle = ordered.numel() // 2
    return (
        float(ordered[middle]) if ordered.numel() % 2 else float((ordered[middle - 1] + ordered[middle]) / 2)
    )


def _td_kind(result: TransitionResult, mask: torch.Tensor) -> TdKindStats:
    td = result.td[mask]
    return TdKindStats(
        pairs=int(mask.sum()),
        mean=_mean(td),
        median=_median(td),
        neuron_changes_mean=_mean(result.neuron_changes[mask]),
    )


def transition_section(
    result: TransitionResult,
    space: Literal["inputs", "embedding"] = "inputs",
    interpolated: Sequence[str] = (),
    config: AnalysisConfig | None = None,
) -> TransitionDensitySection:
    td = result.td.double()
    td_config = config.transition_density if config is not None else None
    limit = result.limit
    full = saturated(result.td, result.points)
    rows = _rows(
        result.pairs, result.same_label, result.ps, result.distance, result.td, result.neuron_changes
    )
    return TransitionDensitySection(
        pairs=int(result.pairs.shape[0]),
        points=result.points,
        mean=_mean(td),
        median=_median(td),
        std=float(td.std(unbiased=False)) if td.numel() else None,
        neuron_changes_mean=_mean(result.neuron_changes),
        per_pair_kind={
            "same_label": _td_kind(result, result.same_label),
            "different_label": _td_kind(result, ~result.same_label),
        },
        samples=with_converged_rows(rows, limit) if limit is not None else rows,
        space=space,
        interpolated=list(interpolated),
        converged=(
            converged_section(
                limit, result.same_label, td_config.converged_tolerance, td_config.converged_max_points
            )
            if limit is not None and td_config is not None
            else None
        ),
        saturated=full,
        warnings=[saturation_warning(result.td, result.points, limit is not None)] if full else [],
    )


def _rows(
    pairs: torch.Tensor,
    same_label: torch.Tensor,
    ps: torch.Tensor,
    distance: torch.Tensor,
    td: torch.Tensor | None = None,
    neuron_changes: torch.Tensor | None = None,
) -> list[PairSampleRow]:
    count = min(SAMPLE_ROWS, int(pairs.shape[0]))
    rows = []
    for k in range(count):
        rows.append(
            PairSampleRow(
                i=int(pairs[k, 0]),
                j=int(pairs[k, 1]),
                same_label=bool(same_label[k]),
                ps=float(ps[k]),
                prediction_distance=float(distance[k]),
                td=int(td[k]) if td is not None else None,
                neuron_changes=int(neuron_changes[k]) if neuron_changes is not None else None,
            )
        )
    return rows


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _provenance(inputs: ReportInputs) -> Provenance:
    return Provenance(
        neuronscope_version=__version__,
        python_version=platform.python_version(),
        torch_version=torch.__version__,
        onnx_version=_version("onnx"),
        onnxruntime_version=_version("onnxruntime") or _version("onnxruntime-gpu"),
        device=inputs.facts.device,
        runtime=inputs.facts.runtime,
        seed=inputs.config.seed,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        config=inputs.config,
    )
