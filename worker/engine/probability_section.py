"""``prediction_distance.probabilities`` (schema 1.2): the prediction distance and its rank
correlations with PS and TD, on class probabilities instead of raw outputs (softmax squashes
large logit differences, which changes the correlations a lot)."""

from __future__ import annotations

import torch

from neuronscope.contracts.report import PredictionDistanceKind, ProbabilityDistanceSection, Report
from worker.engine.metrics.correlation import spearman
from worker.engine.metrics.pairs import PairSets
from worker.engine.prediction import DistanceStats, distance_summary, pair_distances, probabilities
from worker.engine.report_builder import Correlation, TransitionResult


def with_probabilities(
    report: Report,
    outputs: torch.Tensor,
    pairs: PairSets,
    correlation: Correlation,
    transition: TransitionResult | None,
) -> Report:
    """``report`` with ``prediction_distance.probabilities`` from ``[N, C]`` ``outputs`` over the PS
    ``pairs``, the correlation pairs and the TD pairs; unchanged for outputs that are not class
    scores."""
    found = probabilities(outputs)
    if found is None:
        return report
    values, applied = found
    summary = distance_summary(values, pairs)
    distance = pair_distances(values, correlation.pairs.to(values.device)).cpu()
    td_rho = None
    if transition is not None:
        td_distance = pair_distances(values, transition.pairs.to(values.device)).cpu()
        td_rho = spearman(transition.td.double(), td_distance)
    section = ProbabilityDistanceSection(
        softmax_applied=applied,
        random=_kind(summary.random),
        same_label=_kind(summary.same_label),
        different_label=_kind(summary.different_label),
        spearman_vs_ps=spearman(correlation.ps, distance),
        spearman_vs_td=td_rho,
    )
    distances = report.prediction_distance.model_copy(update={"probabilities": section})
    return report.model_copy(update={"prediction_distance": distances})


def _kind(stats: DistanceStats) -> PredictionDistanceKind:
    return PredictionDistanceKind(pairs=stats.pairs, mean=stats.mean, std=stats.std)
