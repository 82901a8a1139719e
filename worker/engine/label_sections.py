"""The report paths of schema 1.1, filled into a report built without them; every other path
stays as it was.

:func:`with_chance` fills ``pattern_similarity.chance_corrected``,
``pattern_similarity.per_layer[].chance_corrected`` and ``layers[].label_agreement`` from a
:class:`ChanceSummary`; :func:`with_flat` fills ``layers[].flat``, ``dataset.dead_data_points`` and
``dataset.living_fraction`` from a :class:`FlatSummary`.
"""

from __future__ import annotations

from neuronscope.contracts.report import (
    ChanceCorrected,
    ChanceCorrectedNetwork,
    LabelAgreement,
    LayerFlat,
    Report,
)
from worker.engine.errors import AnalysisError
from worker.engine.metrics.chance import ChanceStats, ChanceSummary
from worker.engine.metrics.flat import FlatSummary


def _fields(stats: ChanceStats) -> dict[str, float | None]:
    return {
        "chance": stats.chance,
        "same_label": stats.same_label,
        "different_label": stats.different_label,
        "lift_same": stats.lift_same,
        "lift_different": stats.lift_different,
        "separation": stats.separation,
    }


def with_chance(report: Report, summary: ChanceSummary) -> Report:
    """``report`` with the chance-corrected figures of ``summary`` (one entry per report layer)."""
    if len(summary.layers) != len(report.layers) or len(summary.layers) != len(
        report.pattern_similarity.per_layer
    ):
        raise AnalysisError(
            f"chance-corrected PS: expected one entry per report layer ({len(report.layers)}), "
            f"got {len(summary.layers)}",
            code="internal_error",
        )
    similarity = report.pattern_similarity.model_copy(
        update={
            "chance_corrected": ChanceCorrectedNetwork(
                pairs=summary.pairs,
                same_label_pairs=summary.same_label_pairs,
                **_fields(summary.network),
            ),
            "per_layer": [
                entry.model_copy(update={"chance_corrected": ChanceCorrected(**_fields(stats.chance))})
                for entry, stats in zip(report.pattern_similarity.per_layer, summary.layers, strict=True)
            ],
        }
    )
    layers = [
        layer.model_copy(
            update={
                "label_agreement": LabelAgreement(
                    different_label_mean=stats.different_label_agreement_mean,
                    label_dying_count=stats.label_dying_count,
                    label_dying_fraction=stats.label_dying_count / layer.neurons,
                    neuron_lift_mean=stats.neuron_lift_mean,
                )
            }
        )
        for layer, stats in zip(report.layers, summary.layers, strict=True)
    ]
    return report.model_copy(update={"pattern_similarity": similarity, "layers": layers})


def with_flat(report: Report, summary: FlatSummary) -> Report:
    """``report`` with the flat-region death of ``summary`` (one entry per report layer)."""
    if len(summary.layers) != len(report.layers) or summary.samples != report.dataset.samples:
        raise AnalysisError(
            f"flat regions: expected {len(report.layers)} layers over {report.dataset.samples} samples, "
            f"got {len(summary.layers)} layers over {summary.samples}",
            code="internal_error",
        )
    layers = [
        layer.model_copy(
            update={
                "flat": LayerFlat(
                    flat_regions=stats.flat_regions,
                    rarely_active_count=stats.rarely_active_count,
                    rarely_active_fraction=stats.rarely_active_count / layer.neurons,
                    never_active_count=stats.never_active_count,
                )
            }
        )
        for layer, stats in zip(report.layers, summary.layers, strict=True)
    ]
    dataset = report.dataset.model_copy(
        update={
            "dead_data_points": summary.dead_data_points,
            "living_fraction": 1.0 - summary.dead_data_points / summary.samples,
        }
    )
    return report.model_copy(update={"layers": layers, "dataset": dataset})
