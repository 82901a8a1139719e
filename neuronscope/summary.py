"""Plain-words reading of a report: the headline verdicts and a short text summary.

The verdicts are shared by the CLI summary and the HTML report so both say the same thing.
Thresholds for the wording (how large a same- vs different-label gap counts as a clear
separation) are heuristics, stated in :data:`SEPARATION_CLEAR` and its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from neuronscope.contracts.report import LayerHealth, Report

#: The widest gap between the same- and different-label PS_D(λ) curves (a share of pairs) at least
#: this large reads as a clear class separation; below SEPARATION_WEAK, as hardly any.
SEPARATION_CLEAR = 0.5
SEPARATION_WEAK = 0.2
#: The same thresholds for the PS_E gap, used when the report has no PS_D curves.
GAP_CLEAR = 0.10
GAP_WEAK = 0.03
#: How well the activation patterns separate classes, in three words.
Level = Literal["clear", "weak", "none"]
#: Layers whose dying share is at least this (and at least half the worst layer's) are named.
HOT_LAYER_MIN = 0.05
#: Below this overall dying share the network reads as healthy.
HEALTHY_DYING = 0.01


def pct(value: float | None, digits: int = 0) -> str:
    """``0.314`` → ``'31%'``; ``None`` → ``'n/a'``."""
    if value is None:
        return "n/a"
    return f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    """A compact number, ``'n/a'`` for ``None``."""
    if value is None:
        return "n/a"
    return (
        f"{value:.{digits}g}"
        if abs(value) >= 1000 or (value != 0 and abs(value) < 1e-3)
        else f"{value:.{digits}f}"
    )


def short_name(name: str, limit: int = 40) -> str:
    """A layer name cut to ``limit`` characters (with an ellipsis)."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def layer_ranges(indices: Sequence[int]) -> str:
    """1-based layer numbers as ranges: ``[5, 6, 7, 8, 1]`` (0-based) → ``'2, 6–9'``."""
    nums = sorted({i + 1 for i in indices})
    parts: list[str] = []
    start = prev = nums[0] if nums else 0
    for n in nums[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        start = prev = n
    if nums:
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
    return ", ".join(parts)


@dataclass(frozen=True)
class DyingVerdict:
    """Where the dying neurons concentrate. ``layers``: 0-based indices of the named layers."""

    text: str
    layers: list[int]
    share: float
    overall_dying: float
    overall_dead: float


@dataclass(frozen=True)
class GapVerdict:
    """The same- vs different-label pattern-similarity gap, and the λ where the curves differ most."""

    text: str
    same: float | None
    different: float | None
    gap: float | None
    peak_lambda: float | None = None
    peak_same: float | None = None
    peak_different: float | None = None
    level: Level | None = None


def _weighted(layers: Sequence[LayerHealth], attr: str) -> float:
    neurons = sum(layer.neurons for layer in layers)
    if neurons == 0:
        return 0.0
    return sum(int(getattr(layer, attr)) for layer in layers) / neurons


def dying_verdict(report: Report) -> DyingVerdict:
    """E.g. "31% of neurons in layers 6–9 sit in one region for at least 90% of inputs"."""
    layers = report.layers
    threshold = pct(report.provenance.config.dying_threshold)
    total = sum(layer.neurons for layer in layers)
    dying, dead = _weighted(layers, "dying_count"), _weighted(layers, "dead_count")
    if total == 0:
        return DyingVerdict("No neurons were analysed.", [], 0.0, 0.0, 0.0)
    if dying < HEALTHY_DYING:
        text = (
            f"Nearly every neuron is working: {pct(dying, 1)} of the {total:,} neurons sit in one region "
            f"for at least {threshold} of inputs."
        )
        return DyingVerdict(text, [], dying, dying, dead)
    worst = max(layer.dying_fraction for layer in layers)
    hot = [i for i, layer in enumerate(layers) if layer.dying_fraction >= max(HOT_LAYER_MIN, worst / 2)]
    hot_layers = [layers[i] for i in hot]
    share = _weighted(hot_layers, "dying_count")
    hot_dead = _weighted(hot_layers, "dead_count")
    if len(hot) == len(layers):
        where = (
            f"all {len(layers)} layers" if len(layers) > 1 else f"the layer ({short_name(layers[0].name)})"
        )
    elif len(hot) == 1:
        where = f"layer {hot[0] + 1} ({short_name(layers[hot[0]].name)})"
    else:
        where = f"layers {layer_ranges(hot)}"
    text = f"{pct(share)} of neurons in {where} sit in one region for at least {threshold} of inputs"
    text += f" ({pct(hot_dead)} are dead: one region for every input)."
    if len(hot) != len(layers):
        text += f" Across the whole network: {pct(dying)} dying, {pct(dead)} dead."
    return DyingVerdict(text, hot, share, dying, dead)


def _peak(report: Report) -> tuple[float, float, float] | None:
    """``(λ, PS_D_same(λ), PS_D_different(λ))`` where the same-label curve is furthest above."""
    ps = report.pattern_similarity
    same_curve, diff_curve = ps.same_label.ps_d, ps.different_label.ps_d
    best: tuple[float, float, float] | None = None
    for lam, s, d in zip(same_curve.lambda_, same_curve.value, diff_curve.value, strict=False):
        if s is not None and d is not None and (best is None or s - d > best[1] - best[2]):
            best = (lam, s, d)
    return best


def gap_verdict(report: Report) -> GapVerdict:
    """The same- vs different-label similarity gap in plain words (the paper's expressivity indicator).

    The judgement uses the widest vertical gap between the PS_D(λ) curves (a one-sided
    Kolmogorov–Smirnov distance between the two PS distributions: 1 when every same-label pair is
    more alike than every different-label pair), and the PS_E gap when the curves are missing.
    """
    ps = report.pattern_similarity
    same, diff = ps.same_label.mean, ps.different_label.mean
    if same is None or diff is None:
        missing = "same-label" if same is None else "different-label"
        return GapVerdict(
            f"No {missing} pairs were analysed, so class separation cannot be judged.", same, diff, None
        )
    gap = same - diff
    peak = _peak(report)
    level: Level
    if peak is not None:
        separation = peak[1] - peak[2]
        level = (
            "clear" if separation >= SEPARATION_CLEAR else "weak" if separation >= SEPARATION_WEAK else "none"
        )
    else:
        level = "clear" if gap >= GAP_CLEAR else "weak" if gap >= GAP_WEAK else "none"
    judgement = {
        "clear": "the network separates classes clearly",
        "weak": "the network separates classes only weakly",
        "none": "the network barely tells classes apart by its activation patterns",
    }[level]
    source = " (labels: the model's own predictions)" if report.dataset.labels_source == "predicted" else ""
    text = (
        f"Inputs with the same label share {pct(same)} of their activation pattern on average, inputs with "
        f"different labels {pct(diff)} (a gap of {gap * 100:+.0f} points){source}."
    )
    if peak is not None:
        lam, s, d = peak
        text += (
            f" At λ = {lam:.2f}, {pct(s)} of same-label pairs but {pct(d)} of different-label pairs agree on "
            f"more than {pct(lam)} of their pattern: {judgement}."
        )
        return GapVerdict(text, same, diff, gap, lam, s, d, level)
    return GapVerdict(text + f" {judgement[0].upper()}{judgement[1:]}.", same, diff, gap, level=level)


def headline(report: Report) -> list[str]:
    """The verdict sentences, most important first."""
    return [dying_verdict(report).text, gap_verdict(report).text]


def summarize(report: Report, *, worst_layers: int = 3) -> str:
    """A short human summary (a dozen lines at most) for a terminal."""
    m, d, ps = report.model, report.dataset, report.pattern_similarity
    labels = f"labels: {d.labels_source}"
    if d.classes is not None:
        labels += f", {d.classes} classes"
    if d.accuracy is not None:
        labels += f", accuracy {pct(d.accuracy, 1)}"
    lines = [
        f"neuronscope: {m.format} model, {len(m.layers)} activation layers, {m.neurons:,} neurons; "
        f"{d.samples:,} samples ({labels})",
        "Verdict: " + dying_verdict(report).text,
        "Classes: " + gap_verdict(report).text,
        "Pattern similarity PS_E: "
        + " · ".join(
            f"{kind} {num(s.mean)} ± {num(s.std)} ({s.pairs:,} pairs)"
            for kind, s in (
                ("random", ps.random),
                ("same-label", ps.same_label),
                ("different-label", ps.different_label),
            )
        ),
    ]
    td = report.transition_density
    if td is None:
        lines.append("Transition density: skipped")
    else:
        lines.append(
            f"Transition density: mean {num(td.mean, 2)}, median {num(td.median, 2)} over {td.pairs:,} pairs "
            f"× {td.points:,} points"
        )
    ranked = sorted(enumerate(report.layers), key=lambda il: il[1].dying_fraction, reverse=True)
    ranked = [(i, layer) for i, layer in ranked if layer.dying_fraction > 0][:worst_layers]
    if ranked:
        lines.append(
            "Most dying: "
            + ", ".join(
                f"layer {i + 1} {short_name(layer.name, 30)} {pct(layer.dying_fraction)} "
                f"(dead {pct(layer.dead_fraction)})"
                for i, layer in ranked
            )
        )
    pdist = report.prediction_distance
    if pdist.spearman_vs_ps is not None or pdist.spearman_vs_td is not None:
        lines.append(
            f"Prediction distance rank correlation: with PS {num(pdist.spearman_vs_ps, 2)}, "
            f"with TD {num(pdist.spearman_vs_td, 2)}"
        )
    p = report.provenance
    lines.append(f"Ran on {p.device} ({p.runtime}) in {report.timings.total_s:.1f} s")
    return "\n".join(lines)
