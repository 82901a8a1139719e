"""Reports of successive training checkpoints joined into one :class:`Trend`: dead, dying,
label-dying and ReDo-dormant shares, neuron coverage and class separation beyond chance, per layer
and for the network, against the checkpoint.

>>> trend = build_trend([report_epoch1, report_epoch5], ["epoch1", "epoch5"])  # doctest: +SKIP
>>> trend.change.dead_fraction  # doctest: +SKIP
0.12
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from neuronscope.contracts.report import LayerHealth, Report
from neuronscope.contracts.trend import (
    MAX_CHECKPOINTS,
    Checkpoint,
    LayerSeries,
    NetworkChange,
    NetworkSeries,
    Trend,
)
from neuronscope.errors import InvalidInput
from neuronscope.summary import num, pct, short_name

Figure = Callable[[Report], float | None]


def _share(layers: Sequence[LayerHealth], count: Callable[[LayerHealth], int | None]) -> float | None:
    """``sum(count) / sum(neurons)`` over the layers whose count is known; ``None`` when none is."""
    known = [(count(layer), layer.neurons) for layer in layers]
    counted = [(c, n) for c, n in known if c is not None]
    neurons = sum(n for _, n in counted)
    return sum(c for c, _ in counted) / neurons if counted and neurons else None


def _never_active(report: Report) -> float | None:
    flat = [layer for layer in report.layers if layer.flat is not None and layer.flat.flat_regions]
    return _share(flat, lambda layer: layer.flat.never_active_count if layer.flat else None)


def _label_dying(layer: LayerHealth) -> int | None:
    return layer.label_agreement.label_dying_count if layer.label_agreement else None


def _separation(report: Report) -> float | None:
    cc = report.pattern_similarity.chance_corrected
    return cc.separation if cc else None


def _chance(report: Report) -> float | None:
    cc = report.pattern_similarity.chance_corrected
    return cc.chance if cc else None


NETWORK_FIGURES: dict[str, Figure] = {
    "accuracy": lambda r: r.dataset.accuracy,
    "dead_fraction": lambda r: _share(r.layers, lambda layer: layer.dead_count),
    "dying_fraction": lambda r: _share(r.layers, lambda layer: layer.dying_count),
    "never_active_fraction": _never_active,
    "label_dying_fraction": lambda r: _share(r.layers, _label_dying),
    "dormant_fraction": lambda r: r.neuron_death.dormant_fraction if r.neuron_death else None,
    "coverage_fraction": lambda r: r.neuron_death.coverage_fraction if r.neuron_death else None,
    "separation": _separation,
    "chance": _chance,
    "living_fraction": lambda r: r.dataset.living_fraction,
    "transition_density": lambda r: r.transition_density.mean if r.transition_density else None,
}


def _layer_series(name: str, reports: Sequence[Report]) -> LayerSeries:
    health = [next((layer for layer in r.layers if layer.name == name), None) for r in reports]
    similarity = [
        next((layer for layer in r.pattern_similarity.per_layer if layer.name == name), None) for r in reports
    ]
    op_type = next(layer.op_type for layer in health if layer is not None)
    return LayerSeries(
        name=name,
        op_type=op_type,
        dead_fraction=[layer.dead_fraction if layer else None for layer in health],
        dying_fraction=[layer.dying_fraction if layer else None for layer in health],
        label_dying_fraction=[
            layer.label_agreement.label_dying_fraction if layer and layer.label_agreement else None
            for layer in health
        ],
        dormant_fraction=[
            layer.death.dormant_fraction if layer and layer.death else None for layer in health
        ],
        separation=[
            layer.chance_corrected.separation if layer and layer.chance_corrected else None
            for layer in similarity
        ],
    )


def _warnings(reports: Sequence[Report], labels: Sequence[str], names: Sequence[str]) -> list[str]:
    warnings: list[str] = []
    datasets = {r.dataset.sha256 for r in reports}
    if len(datasets) > 1:
        warnings.append(
            f"the checkpoints were analysed on {len(datasets)} different datasets: figures move with the "
            "data as well as with training"
        )
    settings = {
        (r.provenance.config.space, tuple((layer.name, tuple(layer.breakpoints)) for layer in r.model.layers))
        for r in reports
    }
    if len(settings) > 1:
        warnings.append(
            "the checkpoints use different breakpoints Γ or value spaces: dead and dying shares are not "
            "comparable across them (separation beyond chance is)"
        )
    for name in names:
        missing = [
            label for label, r in zip(labels, reports, strict=True) if all(x.name != name for x in r.layers)
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            warnings.append(f"layer {short_name(name)!r} is missing from checkpoints {shown}")
    return warnings


def build_trend(reports: Sequence[Report], labels: Sequence[str]) -> Trend:
    """One trend from ``reports`` in checkpoint order, named by ``labels`` (one per report, unique).

    Raises:
        InvalidInput (``trend_invalid``): fewer than 2 or more than :data:`MAX_CHECKPOINTS` reports,
            or labels that do not match them one to one.
    """
    if not 2 <= len(reports) <= MAX_CHECKPOINTS:
        raise InvalidInput(
            f"trend: expected 2 to {MAX_CHECKPOINTS} reports (one per checkpoint), got {len(reports)}",
            code="trend_invalid",
        )
    if len(labels) != len(reports) or len(set(labels)) != len(labels):
        raise InvalidInput(
            f"trend: expected {len(reports)} distinct checkpoint labels, got {list(labels)[:10]}",
            code="trend_invalid",
        )
    names = list(dict.fromkeys(layer.name for r in reports for layer in r.layers))
    series = {figure: [compute(r) for r in reports] for figure, compute in NETWORK_FIGURES.items()}
    change = {
        figure: None if values[0] is None or values[-1] is None else values[-1] - values[0]
        for figure, values in series.items()
    }
    return Trend(
        checkpoints=[
            Checkpoint(
                label=label,
                model_sha256=r.model.sha256,
                dataset_sha256=r.dataset.sha256,
                samples=r.dataset.samples,
                created_at=r.provenance.created_at,
            )
            for label, r in zip(labels, reports, strict=True)
        ],
        network=NetworkSeries(**series),
        layers=[_layer_series(name, reports) for name in names],
        change=NetworkChange(**change),
        warnings=_warnings(reports, labels, names),
    )


_ROWS: list[tuple[str, str, bool]] = [
    ("accuracy", "accuracy", True),
    ("dead_fraction", "dead neurons", True),
    ("dying_fraction", "dying neurons", True),
    ("never_active_fraction", "never active (flat region)", True),
    ("label_dying_fraction", "label-dying neurons", True),
    ("dormant_fraction", "ReDo-dormant units (τ=0.025)", True),
    ("coverage_fraction", "neuron coverage (t=0.25)", True),
    ("separation", "separation beyond chance", False),
    ("chance", "chance PS", False),
    ("living_fraction", "living inputs", True),
    ("transition_density", "transition density", False),
]


def _cell(value: float | None, percent: bool) -> str:
    return pct(value, 1) if percent else num(value)


def format_trend(trend: Trend, *, max_layers: int = 40) -> str:
    """A plain-text table: network figures per checkpoint, then dead share and separation per layer."""
    labels = [c.label for c in trend.checkpoints]
    width = max(10, *(len(label) for label in labels))
    head = f"{'':<30}" + "".join(f"{short_name(label, width):>{width + 2}}" for label in labels)
    lines = [head]
    for figure, title, percent in _ROWS:
        values: list[float | None] = getattr(trend.network, figure)
        lines.append(f"{title:<30}" + "".join(f"{_cell(v, percent):>{width + 2}}" for v in values))
    lines += ["", "dead share / separation per layer:"]
    for layer in trend.layers[:max_layers]:
        cells = [
            f"{pct(dead, 0)}/{num(sep, 2)}"
            for dead, sep in zip(layer.dead_fraction, layer.separation, strict=True)
        ]
        lines.append(f"{short_name(layer.name, 28):<30}" + "".join(f"{c:>{width + 2}}" for c in cells))
    if len(trend.layers) > max_layers:
        lines.append(f"… {len(trend.layers) - max_layers} more layers in the JSON")
    lines += [f"warning: {w}" for w in trend.warnings]
    return "\n".join(lines)
