"""The report paths of schema 1.2, filled into a report built without them: ``layers[].death``
and ``neuron_death`` from the capture pass's :class:`ValueAccumulator` and the region counts of
its :class:`HealthAccumulator`; every other path stays as it was."""

from __future__ import annotations

from neuronscope.contracts.report import (
    MAX_STUCK_NEURONS,
    CoverageShare,
    DormantShare,
    LayerDeath,
    LayerHealth,
    NetworkDeath,
    Report,
    StuckNeuron,
    fair_shares,
)
from worker.engine.errors import AnalysisError
from worker.engine.metrics.death import (
    COVERAGE_THRESHOLD,
    COVERAGE_THRESHOLDS,
    DORMANT_TAU,
    DORMANT_TAUS,
    LayerDeathStats,
    ValueAccumulator,
    region_distance,
)
from worker.engine.metrics.health import HealthAccumulator


def _shares(
    dormant: tuple[int, ...], covered: tuple[int, ...], units: int
) -> tuple[list[DormantShare], list[CoverageShare]]:
    return (
        [
            DormantShare(tau=tau, count=n, fraction=n / units)
            for tau, n in zip(DORMANT_TAUS, dormant, strict=True)
        ],
        [
            CoverageShare(threshold=t, covered=n, fraction=n / units)
            for t, n in zip(COVERAGE_THRESHOLDS, covered, strict=True)
        ],
    )


def _headline(
    shares: list[DormantShare] | list[CoverageShare], levels: tuple[float, ...], level: float
) -> float:
    return shares[levels.index(level)].fraction


def _stuck(
    layer: int,
    entry: LayerHealth,
    breakpoints: list[float],
    values: ValueAccumulator,
    health: HealthAccumulator,
    listed: list[int],
) -> list[StuckNeuron]:
    if not listed:
        return []
    dead = set(entry.dead_neurons)
    rows = zip(listed, health.dominant_regions(layer, listed), values.ranges(layer, listed), strict=True)
    return [
        StuckNeuron(
            neuron=neuron,
            dead=neuron in dead or share == 1.0,
            region=region,
            region_share=share,
            pre_min=span.pre_min,
            pre_max=span.pre_max,
            breakpoint_distance=region_distance(span.space_min, span.space_max, region, breakpoints),
        )
        for neuron, (region, share), span in rows
    ]


def _listed(entry: LayerHealth) -> list[int]:
    return sorted({*entry.dead_neurons, *entry.dying_neurons})


def _layer(
    layer: int,
    entry: LayerHealth,
    stats: LayerDeathStats,
    breakpoints: list[float],
    values: ValueAccumulator,
    health: HealthAccumulator,
    keep: int,
) -> LayerDeath:
    listed = _listed(entry)
    dormant, coverage = _shares(stats.dormant_counts, stats.covered_counts, stats.units)
    return LayerDeath(
        units=stats.units,
        dormant_fraction=_headline(dormant, DORMANT_TAUS, DORMANT_TAU),
        coverage_fraction=_headline(coverage, COVERAGE_THRESHOLDS, COVERAGE_THRESHOLD),
        dormant=dormant,
        coverage=coverage,
        rarely_positive_count=stats.rarely_positive_count,
        rarely_positive_fraction=stats.rarely_positive_count / stats.neurons,
        never_positive_count=stats.never_positive_count,
        stuck_neurons=_stuck(layer, entry, breakpoints, values, health, listed[:keep]),
        stuck_neurons_omitted=max(len(listed) - keep, 0),
    )


def with_death(report: Report, values: ValueAccumulator, health: HealthAccumulator) -> Report:
    """``report`` with every kind of neuron death (one accumulator layer per report layer)."""
    stats = values.result()
    if len(stats) != len(report.layers) or values.samples != report.dataset.samples:
        raise AnalysisError(
            f"neuron death: expected {len(report.layers)} layers over {report.dataset.samples} samples, "
            f"got {len(stats)} layers over {values.samples}",
            code="internal_error",
        )
    keep = fair_shares([len(_listed(entry)) for entry in report.layers], MAX_STUCK_NEURONS)
    layers = [
        entry.model_copy(
            update={"death": _layer(index, entry, layer_stats, info.breakpoints, values, health, keep[index])}
        )
        for index, (entry, layer_stats, info) in enumerate(
            zip(report.layers, stats, report.model.layers, strict=True)
        )
    ]
    units = sum(s.units for s in stats)
    neurons = sum(s.neurons for s in stats)
    dormant, coverage = _shares(
        tuple(sum(s.dormant_counts[k] for s in stats) for k in range(len(DORMANT_TAUS))),
        tuple(sum(s.covered_counts[k] for s in stats) for k in range(len(COVERAGE_THRESHOLDS))),
        units,
    )
    rarely = sum(s.rarely_positive_count for s in stats)
    network = NetworkDeath(
        units=units,
        dormant_fraction=_headline(dormant, DORMANT_TAUS, DORMANT_TAU),
        coverage_fraction=_headline(coverage, COVERAGE_THRESHOLDS, COVERAGE_THRESHOLD),
        dormant=dormant,
        coverage=coverage,
        rarely_positive_count=rarely,
        rarely_positive_fraction=rarely / neurons,
    )
    return report.model_copy(update={"layers": layers, "neuron_death": network})
