"""The report's chance-corrected paths (schema 1.1), from a :class:`ChanceSummary`.

:func:`with_chance` fills ``pattern_similarity.chance_corrected``,
``pattern_similarity.per_layer[].chance_corrected`` and ``layers[].label_agreement`` of a report
built without them; every other path stays as it was.
"""

from __future__ import annotations

from neuronscope.contracts.report import (
    ChanceCorrected,
    ChanceCorrectedNetwork,
    LabelAgreement,
    Report,
)
from worker.engine.errors import AnalysisError
from worker.engine.metrics.chance import ChanceStats, ChanceSummary


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
