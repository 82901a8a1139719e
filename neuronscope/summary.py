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
#: Chance-corrected separation ``(PS_same - PS_different) / (1 - PS_chance)`` at least this large
#: reads as a clear class separation, below LIFT_WEAK as hardly any. Measured on scikit-learn's
#: digits (tests/neuronscope/test_verdicts.py): healthy ReLU and sigmoid nets score 0.2-0.6, a
#: collapsed one about 0.
LIFT_CLEAR = 0.15
LIFT_WEAK = 0.05
#: Accuracy within this share of the way from chance (1 / classes) to 1 counts as near chance.
NEAR_CHANCE_ACCURACY = 0.1
#: Chance PS at least this large means inputs share almost their whole pattern whatever they are.
COLLAPSED_PS = 0.9


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


def near_chance_accuracy(report: Report) -> bool:
    """Whether the model's accuracy on the dataset labels is no better than guessing (within
    :data:`NEAR_CHANCE_ACCURACY` of the way from ``1 / classes`` to 1)."""
    d = report.dataset
    if d.accuracy is None or d.classes is None or d.classes < 2:
        return False
    guess = 1.0 / d.classes
    return d.accuracy <= guess + NEAR_CHANCE_ACCURACY * (1.0 - guess)


def collapse_verdict(report: Report) -> str | None:
    """A sentence when the network has not learnt the task (accuracy near chance), naming a collapse
    when inputs also share nearly their whole pattern; ``None`` otherwise."""
    if not near_chance_accuracy(report):
        return None
    d, cc = report.dataset, report.pattern_similarity.chance_corrected
    assert d.accuracy is not None and d.classes is not None
    ps = cc.chance if cc is not None else report.pattern_similarity.random.mean
    accuracy = (
        f"accuracy {pct(d.accuracy, 1)} is near chance (1 of {d.classes} classes: {pct(1 / d.classes, 1)})"
    )
    if ps is not None and ps >= COLLAPSED_PS:
        return (
            f"The network has collapsed: {accuracy} and any two inputs share {pct(ps)} of their activation "
            "pattern whatever their labels."
        )
    return f"The network has not learnt the task: {accuracy}."


def breakpoints_label(report: Report) -> str:
    """The breakpoints Γ behind raw PS, e.g. ``'Γ = {0} in 3 layers'`` or
    ``'Γ = {-0.5, 0, 0.5} in 2 layers, {0} in 1'``."""
    groups: dict[str, int] = {}
    for layer in report.model.layers:
        key = "{" + ", ".join(f"{b:g}" for b in layer.breakpoints) + "}"
        groups[key] = groups.get(key, 0) + 1
    parts = [f"{key} in {count} layer{'s' if count != 1 else ''}" for key, count in groups.items()]
    if len(parts) > 1:
        parts[1:] = [part.removesuffix(" layers").removesuffix(" layer") for part in parts[1:]]
    return "Γ = " + ", ".join(parts) if parts else "Γ: none"


def _lift_level(separation: float) -> Level:
    return "clear" if separation >= LIFT_CLEAR else "weak" if separation >= LIFT_WEAK else "none"


def gap_verdict(report: Report) -> GapVerdict:
    """The class separation in plain words: chance-corrected when the report has it (schema 1.1),
    else :func:`raw_gap_verdict`; never "clear" when accuracy is near chance."""
    cc = report.pattern_similarity.chance_corrected
    if cc is None or cc.separation is None or cc.same_label is None or cc.different_label is None:
        return raw_gap_verdict(report)
    level = "none" if near_chance_accuracy(report) else _lift_level(cc.separation)
    judgement = {
        "clear": "the network separates classes clearly",
        "weak": "the network separates classes only weakly",
        "none": "the network barely tells classes apart by its activation patterns",
    }[level]
    if level == "none" and near_chance_accuracy(report):
        judgement = "accuracy is near chance, so the patterns do not separate the classes"
    source = " (labels: the model's own predictions)" if report.dataset.labels_source == "predicted" else ""
    text = (
        f"Beyond chance{source}: any two inputs share {pct(cc.chance)} of their pattern by chance "
        f"({breakpoints_label(report)}); same-label inputs {pct(cc.same_label)}, different-label "
        f"{pct(cc.different_label)}, a separation of {num(cc.separation, 2)} of the room above chance: "
        f"{judgement}."
    )
    peak = _peak(report)
    lam, s, d = peak if peak is not None else (None, None, None)
    return GapVerdict(
        text, cc.same_label, cc.different_label, cc.same_label - cc.different_label, lam, s, d, level
    )


def raw_gap_verdict(report: Report) -> GapVerdict:
    """The same- vs different-label gap of raw PS in plain words (the paper's expressivity
    indicator), for reports without chance-corrected figures; never "clear" at near-chance accuracy.

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
    if near_chance_accuracy(report):
        level, judgement = "none", "accuracy is near chance, so the patterns do not separate the classes"
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


def death_verdict(report: Report) -> str | None:
    """Neuron death by the other authors' definitions (schema 1.2), e.g. "By other definitions: 9%
    of units are ReDo-dormant (τ = 0.025), ..."; ``None`` for reports without them. At
    near-chance accuracy it never reads as healthy: saturated smooth units are neither dormant nor
    uncovered, so it says so."""
    death = report.neuron_death
    if death is None:
        return None
    parts = [
        f"{pct(death.dormant_fraction)} of units are ReDo-dormant (mean |output| at most 2.5% of the "
        "layer's)",
        f"{pct(death.rarely_positive_fraction)} of neurons are positive on fewer than 1% of inputs",
        f"neuron coverage (t = 0.25) is {pct(death.coverage_fraction)}",
    ]
    d = report.dataset
    if d.dead_data_points:
        parts.append(
            f"{d.dead_data_points:,} of {d.samples:,} inputs are dead data points (living share "
            f"{pct(d.living_fraction, 1)})"
        )
    text = "By other definitions: " + "; ".join(parts) + "."
    stuck = [
        n.breakpoint_distance
        for layer in report.layers
        if layer.death is not None
        for n in layer.death.stuck_neurons
        if n.dead and n.breakpoint_distance is not None
    ]
    if stuck:
        ordered = sorted(stuck)
        text += (
            f" Listed dead neurons sit a median {num(ordered[len(ordered) // 2], 2)} from their nearest "
            "breakpoint."
        )
    if near_chance_accuracy(report):
        text += " Accuracy is near chance all the same: these measures do not see saturated units."
    return text


def headline(report: Report) -> list[str]:
    """The verdict sentences, most important first."""
    collapse = collapse_verdict(report)
    death = death_verdict(report)
    return [
        *([collapse] if collapse else []),
        dying_verdict(report).text,
        gap_verdict(report).text,
        *([death] if death else []),
    ]


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
        *(f"Warning: {warning}" for warning in m.warnings),
        *(["Verdict: " + collapse] if (collapse := collapse_verdict(report)) else []),
        ("Neurons: " if collapse else "Verdict: ") + dying_verdict(report).text,
        "Classes: " + gap_verdict(report).text,
        *(["Death: " + death] if (death := death_verdict(report)) else []),
        f"Raw pattern similarity PS_E ({breakpoints_label(report)}): "
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
        why = f": {report.transition_density_skipped}" if report.transition_density_skipped else ""
        lines.append(f"Transition density: skipped{why}")
    else:
        lines.append(
            f"Transition density: mean {num(td.mean, 2)}, median {num(td.median, 2)} over {td.pairs:,} pairs "
            f"× {td.points:,} points"
            + (" in the embedding space" if td.space == "embedding" else "")
            + (
                f"; converged (k → ∞) mean {num(td.converged.mean, 2)}"
                + ("" if td.converged.complete else " (lower bound: some paths hit their point budget)")
                if td.converged is not None
                else ""
            )
        )
        lines.extend(f"Warning: {warning}" for warning in td.warnings)
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
