"""The metric math of the engine, on tensors only: activation patterns (Definition 1), pair
selection, pattern similarity (Definition 3, eq. 26–27), transition density (eq. 24–25), layer
health and rank correlation. Nothing here knows about models."""

from worker.engine.metrics.correlation import average_ranks, spearman
from worker.engine.metrics.health import HealthAccumulator, LayerHealthStats
from worker.engine.metrics.pairs import AllPairs, PairLists, PairSets, select_pairs, split_by_label
from worker.engine.metrics.patterns import PatternStore, RegionCoder, pack_bits, region_indices, unpack_bits
from worker.engine.metrics.similarity import (
    CountHistogram,
    KindSummary,
    SimilaritySummary,
    equal_count_matrix,
    pair_counts,
    pattern_similarity,
)
from worker.engine.metrics.transition import TransitionCounter, interpolation_points, path_transitions

__all__ = [
    "AllPairs",
    "CountHistogram",
    "HealthAccumulator",
    "KindSummary",
    "LayerHealthStats",
    "PairLists",
    "PairSets",
    "PatternStore",
    "RegionCoder",
    "SimilaritySummary",
    "TransitionCounter",
    "average_ranks",
    "equal_count_matrix",
    "interpolation_points",
    "pack_bits",
    "pair_counts",
    "path_transitions",
    "pattern_similarity",
    "region_indices",
    "select_pairs",
    "spearman",
    "split_by_label",
    "unpack_bits",
]
