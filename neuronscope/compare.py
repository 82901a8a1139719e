"""What changed between two reports (two versions of a model): metric deltas overall and per layer.

Layers are matched by name. When no name matches but both reports have the same number of
layers (a re-export renamed the nodes), they are matched by position and the comparison says so.
Overall rows are labelled with a gate term (``max(layers.dying_fraction)``) so a delta seen here
can become a gate: ``neuronscope compare OLD NEW --fail-if "delta(max(layers.dying_fraction)) > 0.05"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from neuronscope.contracts.report import LayerHealth, LayerSimilarity, Report
from neuronscope.summary import short_name


@dataclass(frozen=True)
class Delta:
    """One metric in both reports. ``percent``: a share, shown in % with deltas in points."""

    name: str
    old: float | None
    new: float | None
    percent: bool = False

    @property
    def delta(self) -> float | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old


@dataclass(frozen=True)
class LayerDelta:
    name: str
    old_index: int
    new_index: int
    metrics: list[Delta]


@dataclass
class Comparison:
    overall: list[Delta]
    layers: list[LayerDelta]
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _agg(values: Sequence[float | None], how: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if how == "max":
        return max(present)
    return sum(present) / len(present)


def _overall(report: Report) -> dict[str, tuple[float | None, bool]]:
    ps, layers, pdist = report.pattern_similarity, report.layers, report.prediction_distance
    td = report.transition_density
    same, diff = ps.same_label.mean, ps.different_label.mean
    rows: dict[str, tuple[float | None, bool]] = {
        "dataset.accuracy": (report.dataset.accuracy, True),
        "pattern_similarity.random.mean": (ps.random.mean, False),
        "pattern_similarity.same_label.mean": (same, False),
        "pattern_similarity.different_label.mean": (diff, False),
        "same − different PS_E gap": (None if same is None or diff is None else same - diff, False),
        "transition_density.mean": (td.mean if td else None, False),
        "transition_density.median": (td.median if td else None, False),
        "max(layers.dead_fraction)": (_agg([x.dead_fraction for x in layers], "max"), True),
        "mean(layers.dead_fraction)": (_agg([x.dead_fraction for x in layers], "mean"), True),
        "max(layers.dying_fraction)": (_agg([x.dying_fraction for x in layers], "max"), True),
        "mean(layers.dying_fraction)": (_agg([x.dying_fraction for x in layers], "mean"), True),
        "neuron_death.dormant_fraction": (nd.dormant_fraction if (nd := report.neuron_death) else None, True),
        "neuron_death.coverage_fraction": (nd.coverage_fraction if nd else None, True),
        "neuron_death.rarely_positive_fraction": (nd.rarely_positive_fraction if nd else None, True),
        "dataset.living_fraction": (report.dataset.living_fraction, True),
        "prediction_distance.spearman_vs_ps": (pdist.spearman_vs_ps, False),
        "prediction_distance.spearman_vs_td": (pdist.spearman_vs_td, False),
        "model.neurons": (float(report.model.neurons), False),
    }
    return rows


_LAYER_METRICS: list[tuple[str, bool, Callable[[LayerHealth, LayerSimilarity | None], float | None]]] = [
    ("dead", True, lambda h, s: h.dead_fraction),
    ("dying", True, lambda h, s: h.dying_fraction),
    ("dormant", True, lambda h, s: h.death.dormant_fraction if h.death else None),
    ("coverage", True, lambda h, s: h.death.coverage_fraction if h.death else None),
    ("PS_E rand", False, lambda h, s: s.random.mean if s else None),
    ("PS_E same", False, lambda h, s: s.same_label.mean if s else None),
    ("PS_E diff", False, lambda h, s: s.different_label.mean if s else None),
    ("post mean", False, lambda h, s: h.post_activation_mean),
    ("post var", False, lambda h, s: h.post_activation_var),
]


def compare_reports(old: Report, new: Report) -> Comparison:
    """Deltas (new − old) of the headline metrics and of every layer present in both reports."""
    old_rows, new_rows = _overall(old), _overall(new)
    overall = [Delta(name, old_rows[name][0], new_rows[name][0], new_rows[name][1]) for name in new_rows]
    old_ps = {p.name: p for p in old.pattern_similarity.per_layer}
    new_ps = {p.name: p for p in new.pattern_similarity.per_layer}
    old_names = [x.name for x in old.layers]
    new_names = [x.name for x in new.layers]
    notes: list[str] = []
    old_index = {name: i for i, name in enumerate(old_names)}
    pairs = [(old_index[name], j) for j, name in enumerate(new_names) if name in old_index]
    only_old = [n for n in old_names if n not in set(new_names)]
    only_new = [n for n in new_names if n not in old_index]
    if not pairs and old_names and len(old_names) == len(new_names):
        pairs = [(i, i) for i in range(len(new_names))]
        only_old, only_new = [], []
        notes.append("no layer names match; layers matched by position (same count in both reports)")
    layers: list[LayerDelta] = []
    for i, j in pairs:
        oh, nh = old.layers[i], new.layers[j]
        os_, ns_ = old_ps.get(oh.name), new_ps.get(nh.name)
        metrics = [Delta(name, get(oh, os_), get(nh, ns_), pc) for name, pc, get in _LAYER_METRICS]
        label = nh.name if nh.name == oh.name else f"{oh.name} → {nh.name}"
        layers.append(LayerDelta(label, i, j, metrics))
    if old.model.sha256 and old.model.sha256 == new.model.sha256:
        notes.append("both reports are for the same model file (sha256 equal)")
    if old.dataset.sha256 and new.dataset.sha256 and old.dataset.sha256 != new.dataset.sha256:
        notes.append("the datasets differ (sha256): deltas mix model and data changes")
    elif old.dataset.samples != new.dataset.samples:
        notes.append(f"the datasets differ in size ({old.dataset.samples} vs {new.dataset.samples} samples)")
    old_cfg = old.provenance.config.model_dump(exclude={"device", "batch_size"})
    new_cfg = new.provenance.config.model_dump(exclude={"device", "batch_size"})
    changed = sorted(k for k in new_cfg if old_cfg.get(k) != new_cfg[k])
    if changed:
        notes.append(f"the analysis configs differ in: {', '.join(changed)}")
    return Comparison(overall, layers, only_old, only_new, notes)


def _value(value: float | None, percent: bool) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{value * 100:.1f}%"
    if float(value).is_integer() and abs(value) >= 10:
        return f"{value:.0f}"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _delta(value: float | None, percent: bool) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{value * 100:+.1f} pts"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:+.3g}"
    return f"{value:+.4f}" if abs(value) < 10 else f"{value:+.2f}"


def format_comparison(comparison: Comparison, *, max_layers: int = 200) -> str:
    """A plain-text table: overall deltas, then one row per matched layer."""
    lines: list[str] = []
    width = max(len(d.name) for d in comparison.overall)
    lines.append(f"{'Overall':<{width}}  {'old':>10}  {'new':>10}  {'delta':>12}")
    for d in comparison.overall:
        if d.old is None and d.new is None:
            continue
        lines.append(
            f"{d.name:<{width}}  {_value(d.old, d.percent):>10}  {_value(d.new, d.percent):>10}  "
            f"{_delta(d.delta, d.percent):>12}"
        )
    if comparison.layers:
        lines.append("")
        lines.append(
            "Per layer: new value (delta vs old); dead/dying in % of the layer's neurons; "
            "layers matched by name"
        )
        names = [short_name(x.name, 36) for x in comparison.layers[:max_layers]]
        name_w = max(len("layer"), *(len(n) for n in names))
        headers = [m.name for m in comparison.layers[0].metrics]
        col_w = [max(len(h), 17) for h in headers]
        lines.append(
            f"{'layer':<{name_w}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(headers, col_w, strict=True))
        )
        for name, layer in zip(names, comparison.layers, strict=False):
            cells = [f"{_value(m.new, m.percent)} ({_delta(m.delta, m.percent)})" for m in layer.metrics]
            lines.append(
                f"{name:<{name_w}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, col_w, strict=True))
            )
        if len(comparison.layers) > max_layers:
            lines.append(f"… {len(comparison.layers) - max_layers} more layers")
    if comparison.only_old:
        lines.append(
            f"Only in the old report: {', '.join(short_name(n, 36) for n in comparison.only_old[:20])}"
        )
    if comparison.only_new:
        lines.append(
            f"Only in the new report: {', '.join(short_name(n, 36) for n in comparison.only_new[:20])}"
        )
    for note in comparison.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)
