"""The human report: one self-contained HTML file drawn from a :class:`Report`.

Everything is inline: SVG charts drawn here, a small stylesheet, no script and no network fetch
(a Content-Security-Policy forbids both, so the file is safe to open in closed networks and from
untrusted reports). Every string that comes from the report (layer names are user-controlled) is
HTML-escaped. The size is bounded whatever the dataset size: at most :data:`MAX_SCATTER_POINTS`
pairs per scatter, :data:`MAX_LAYERS_DRAWN` layers per chart and :data:`MAX_TABLE_ROWS` table rows.

Charts, after Jiang et al. 2023: PS_D(λ) for random, same- and different-label pairs (Fig. 6),
per-layer dead and dying shares and PS_E, post-activation mean and variance per layer (Fig. 1),
and transition density vs pattern similarity vs prediction distance per pair (Fig. 5).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from neuronscope.contracts.config import AnalysisConfig, PairSample, PairSpec
from neuronscope.contracts.report import MAX_LISTED_NEURONS, PairSampleRow, Report
from neuronscope.html_charts import (
    Frame,
    axes,
    clip,
    empty_chart,
    esc,
    figure,
    fmt,
    layer_ticks,
    legend,
    nice_range,
    page_head,
    polyline,
    svg,
)
from neuronscope.summary import (
    breakpoints_label,
    collapse_verdict,
    death_verdict,
    dying_verdict,
    gap_verdict,
    num,
    pct,
)

MAX_SCATTER_POINTS = 800
MAX_LAYERS_DRAWN = 300
MAX_TABLE_ROWS = 300
MAX_LIST_ITEMS = 8

COLORS = {
    "random": "#7a7a7a",
    "same_label": "#1f6fb4",
    "different_label": "#e06c00",
    "dead": "#a4161a",
    "dying": "#f4a259",
    "mean": "#2a9d8f",
    "var": "#6a4c93",
}
KIND_LABELS = {"random": "random pairs", "same_label": "same label", "different_label": "different label"}


# ---------------------------------------------------------------------------------------------
# Charts


def _ps_curves_chart(report: Report) -> str:
    ps = report.pattern_similarity
    frame = Frame(0.0, 1.0, 0.0, 1.0)
    body = axes(
        frame,
        x_label="λ (share of the pattern that must agree)",
        y_label="PS_D(λ) = P(PS > λ)",
        x_step=0.1,
        y_step=0.2,
        y_format=lambda v: f"{v * 100:.0f}%",
    )
    curves: dict[str, list[tuple[float, float]]] = {}
    for kind in ("random", "same_label", "different_label"):
        stats = getattr(ps, kind)
        pts = [
            (lam, val)
            for lam, val in zip(stats.ps_d.lambda_, stats.ps_d.value, strict=False)
            if val is not None and 0.0 <= lam <= 1.0
        ]
        curves[kind] = pts
    same, diff = curves["same_label"], curves["different_label"]
    if same and diff:
        diff_at = dict(diff)
        shared = [(lam, v) for lam, v in same if lam in diff_at]
        if shared:
            upper = [(frame.sx(lam), frame.sy(v)) for lam, v in shared]
            lower = [(frame.sx(lam), frame.sy(diff_at[lam])) for lam, _ in reversed(shared)]
            coords = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in upper + lower)
            body.append(f'<polygon class="gap-area" points="{coords}"/>')
    for kind in ("random", "different_label", "same_label"):
        pts = [(frame.sx(lam), frame.sy(v)) for lam, v in curves[kind]]
        body.append(polyline(pts, COLORS[kind], dash=kind == "random", width=2.5))
    verdict = gap_verdict(report)
    if (
        verdict.peak_lambda is not None
        and verdict.peak_same is not None
        and verdict.peak_different is not None
    ):
        px = frame.sx(verdict.peak_lambda)
        y_top, y_bot = frame.sy(verdict.peak_same), frame.sy(verdict.peak_different)
        body.append(
            f'<line class="gap-line" x1="{fmt(px)}" y1="{fmt(y_top)}" x2="{fmt(px)}" y2="{fmt(y_bot)}"/>'
        )
        gap_pts = (verdict.peak_same - verdict.peak_different) * 100
        anchor = "end" if verdict.peak_lambda > 0.6 else "start"
        tx = px - 8 if anchor == "end" else px + 8
        ty = (y_top + y_bot) / 2
        body.append(
            f'<text class="gap-text" x="{fmt(tx)}" y="{fmt(ty)}" text-anchor="{anchor}">'
            f"widest gap: {gap_pts:.0f} pts at λ = {verdict.peak_lambda:.2f}</text>"
        )
    if not any(curves.values()):
        return empty_chart("no pairs were analysed")
    return svg(frame, "PS_D(lambda) curves", body)


def _layer_subset(count: int) -> list[int]:
    if count <= MAX_LAYERS_DRAWN:
        return list(range(count))
    step = count / MAX_LAYERS_DRAWN
    picked = sorted({min(count - 1, int(k * step)) for k in range(MAX_LAYERS_DRAWN)} | {count - 1})
    return picked


def _dead_dying_chart(report: Report) -> str:
    layers = report.layers
    if not layers:
        return empty_chart("no layers")
    idx = _layer_subset(len(layers))
    top = max(0.05, *(layers[i].dying_fraction for i in idx))
    _lo, hi, step = nice_range(0.0, min(1.0, top))
    frame = Frame(0.5, len(layers) + 0.5, 0.0, min(1.0, hi))
    body = axes(
        frame,
        x_label="layer (input → output)",
        y_label="share of the layer's neurons",
        x_step=None,
        y_step=step,
        x_ticks=layer_ticks(len(layers)),
        y_format=lambda v: f"{v * 100:.0f}%",
    )
    slot = (frame.sx(1.5) - frame.sx(0.5)) if len(layers) > 1 else (frame.width - frame.left - frame.right)
    bar_w = max(1.0, slot * 0.7)
    base = frame.sy(0.0)
    for i in idx:
        layer = layers[i]
        cx = frame.sx(i + 1)
        tip = esc(
            f"layer {i + 1}: {clip(layer.name)} — dying {pct(layer.dying_fraction, 1)} "
            f"({layer.dying_count}/{layer.neurons}), dead {pct(layer.dead_fraction, 1)} ({layer.dead_count})"
        )
        for frac, color in ((layer.dying_fraction, COLORS["dying"]), (layer.dead_fraction, COLORS["dead"])):
            y = frame.sy(min(frac, frame.y1))
            body.append(
                f'<rect x="{fmt(cx - bar_w / 2)}" y="{fmt(y)}" width="{fmt(bar_w)}" height="{fmt(base - y)}" '
                f'fill="{color}"><title>{tip}</title></rect>'
            )
    return svg(frame, "dead and dying neurons per layer", body)


def _per_layer_lines(
    count: int,
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    y_label: str,
    label: str,
    names: Sequence[str],
    zero_based_y: bool = False,
    percent: bool = False,
    height: int = 300,
) -> str:
    idx = _layer_subset(count)
    values = [v for _, _, vals in series for i in idx if (v := vals[i]) is not None]
    if not values:
        return empty_chart("no values")
    lo, hi = min(values), max(values)
    if zero_based_y:
        lo = min(0.0, lo)
    lo, hi, step = nice_range(lo, hi)
    if percent:
        lo, hi = max(0.0, lo), min(1.0, hi) if hi <= 1.0 else hi
    frame = Frame(0.5, count + 0.5, lo, hi, height=height)
    body = axes(
        frame,
        x_label="layer (input → output)",
        y_label=y_label,
        x_step=None,
        y_step=step,
        x_ticks=layer_ticks(count),
        y_format=(lambda v: f"{v * 100:.0f}%") if percent else None,
    )
    for _kind, color, vals in series:
        run: list[tuple[float, float]] = []
        for i in idx:
            v = vals[i]
            if v is None:
                body.append(polyline(run, color))
                run = []
                continue
            run.append((frame.sx(i + 1), frame.sy(v)))
        body.append(polyline(run, color))
        if len(idx) <= 80:
            for i in idx:
                v = vals[i]
                if v is not None:
                    tip = esc(f"layer {i + 1}: {clip(names[i])} — {num(v, 4)}")
                    body.append(
                        f'<circle cx="{fmt(frame.sx(i + 1))}" cy="{fmt(frame.sy(v))}" r="3.5" fill="{color}">'
                        f"<title>{tip}</title></circle>"
                    )
    return svg(frame, label, body)


def _padded(values: Iterable[float], share: float = 0.04) -> tuple[float, float]:
    """The data range widened a little, so points do not sit on the axes."""
    vals = list(values)
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * share or abs(hi) * share or 0.5
    return (lo - pad if lo - pad >= 0 or lo < 0 else 0.0), hi + pad


def _subsample(rows: Sequence[PairSampleRow], cap: int) -> list[PairSampleRow]:
    """At most ``cap`` rows, spread evenly over each pair kind so both kinds stay visible."""
    if len(rows) <= cap:
        return list(rows)
    out: list[PairSampleRow] = []
    for same in (True, False):
        kind = [r for r in rows if r.same_label == same]
        share = max(1, round(cap * len(kind) / len(rows))) if kind else 0
        step = len(kind) / share if share else 1
        out.extend(kind[int(k * step)] for k in range(min(share, len(kind))))
    return out[:cap]


def _scatter(
    rows: Sequence[PairSampleRow],
    x_of: Callable[[PairSampleRow], float | None],
    y_of: Callable[[PairSampleRow], float | None],
    *,
    x_label: str,
    y_label: str,
    label: str,
) -> str:
    points = [(x, y, r) for r in rows if (x := x_of(r)) is not None and (y := y_of(r)) is not None]
    points = [(x, y, r) for x, y, r in points if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return empty_chart("no pairs to plot")
    x_lo, x_hi, x_step = nice_range(*_padded(p[0] for p in points))
    y_lo, y_hi, y_step = nice_range(*_padded(p[1] for p in points))
    frame = Frame(x_lo, x_hi, y_lo, y_hi, width=440, height=330, left=54)
    body = axes(frame, x_label=x_label, y_label=y_label, x_step=x_step, y_step=y_step)
    # Different-label first so same-label points (usually fewer) stay on top.
    for x, y, r in sorted(points, key=lambda p: p[2].same_label):
        color = COLORS["same_label" if r.same_label else "different_label"]
        body.append(
            f'<circle class="pt" cx="{fmt(frame.sx(x))}" cy="{fmt(frame.sy(y))}" r="3" fill="{color}"/>'
        )
    return svg(frame, label, body)


# ---------------------------------------------------------------------------------------------
# Text blocks


def _compact(value: Any, indent: int = 0) -> str:
    """Pretty JSON with long lists shortened (display only: the JSON report has the full config)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ",\n".join(
            f"{pad}  {json.dumps(str(k))}: {_compact(v, indent + 1)}" for k, v in value.items()
        )
        return "{\n" + inner + "\n" + pad + "}"
    if isinstance(value, list | tuple):  # sliced, never copied whole: a list may be a million long
        shown = [_compact(v, indent + 1) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            shown.append(f"… {len(value) - MAX_LIST_ITEMS} more ({len(value)} in all)")
        return "[" + ", ".join(shown) + "]"
    if isinstance(value, str):
        return json.dumps(clip(value, 200))
    return json.dumps(value)


def _pairs_for_display(spec: PairSpec) -> object:
    if isinstance(spec, PairSample):
        return spec.model_dump(mode="json")
    return spec  # "all", or the explicit list itself: _compact shows its head, nothing is copied


def _config_for_display(config: AnalysisConfig) -> dict[str, object]:
    """The config as ``_compact`` shows it, without dumping explicit pair lists whole (a config may
    list a million pairs; the page shows eight)."""
    dumped = config.model_dump(mode="json", exclude={"pairs": True, "transition_density": {"pairs"}})
    shown: dict[str, object] = {}
    for name in type(config).model_fields:
        if name == "pairs":
            shown[name] = _pairs_for_display(config.pairs)
        elif name == "transition_density" and config.transition_density is not None:
            shown[name] = {"pairs": _pairs_for_display(config.transition_density.pairs), **dumped[name]}
        else:
            shown[name] = dumped[name]
    return shown


def _omitted_note(report: Report) -> str:
    omitted = report.neurons_omitted
    if not omitted:
        return ""
    listed = sum(len(x.dead_neurons) + len(x.dying_neurons) for x in report.layers)
    return (
        f'<p class="note">The JSON report lists {listed:,} dead and dying neuron indices and leaves '
        f"{omitted:,} out (at most {report.provenance.config.max_neuron_indices:,} per list and layer, "
        f"{MAX_LISTED_NEURONS:,} over all layers); the counts and shares here are exact.</p>"
    )


def _kv_table(rows: Iterable[tuple[str, object]]) -> str:
    cells = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(clip(str(v), 200))}</td></tr>" for k, v in rows if v is not None
    )
    return f'<table class="kv">{cells}</table>'


def _chip(label: str, value: str, tone: str = "") -> str:
    return f'<div class="chip {tone}"><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def _layer_table(report: Report) -> str:
    per_layer = {p.name: p for p in report.pattern_similarity.per_layer}
    infos = {info.name: info for info in report.model.layers}
    rows = []
    for i, layer in enumerate(report.layers[:MAX_TABLE_ROWS]):
        ps = per_layer.get(layer.name)
        info = infos.get(layer.name)
        bps = info.breakpoints if info else []
        bp_text = ", ".join(f"{b:g}" for b in bps[:MAX_LIST_ITEMS]) + (
            " …" if len(bps) > MAX_LIST_ITEMS else ""
        )
        flag = ' class="warn"' if layer.dying_fraction >= 0.2 else ""
        rows.append(
            f'<tr{flag}><td>{i + 1}</td><td class="name" title="{esc(clip(layer.name, 300))}">'
            f"{esc(clip(layer.name))}</td><td>{esc(layer.op_type)}</td><td>{layer.neurons:,}</td>"
            f"<td>{pct(layer.dead_fraction, 1)}</td><td>{pct(layer.dying_fraction, 1)}</td>"
            f"<td>{num(ps.random.mean) if ps else 'n/a'}</td>"
            f"<td>{num(ps.same_label.mean) if ps else 'n/a'}</td>"
            f"<td>{num(ps.different_label.mean) if ps else 'n/a'}</td>"
            f"<td>{num(layer.post_activation_mean, 4)}</td><td>{num(layer.post_activation_var, 4)}</td>"
            f"<td>{esc(bp_text)}</td></tr>"
        )
    more = ""
    if len(report.layers) > MAX_TABLE_ROWS:
        more = (
            f'<p class="note">First {MAX_TABLE_ROWS} of {len(report.layers)} layers shown; '
            "the JSON has all.</p>"
        )
    head = (
        "<tr><th>#</th><th>layer</th><th>op</th><th>neurons</th><th>dead</th><th>dying</th>"
        "<th>PS_E random</th><th>PS_E same</th><th>PS_E diff.</th><th>post mean</th><th>post var</th>"
        "<th>breakpoints Γ</th></tr>"
    )
    return f'<div class="scroll"><table class="layers">{head}{"".join(rows)}</table></div>{more}'


#: Stuck neurons shown per layer in the HTML death table (the JSON lists every listed one).
STUCK_SHOWN = 5


def _death_table(report: Report) -> str:
    """Per layer, every kind of death (schema 1.2) and the first stuck neurons; empty for older reports."""
    if report.neuron_death is None:
        return ""
    rows = []
    for i, layer in enumerate(report.layers[:MAX_TABLE_ROWS]):
        death = layer.death
        if death is None:
            continue
        stuck = "; ".join(
            f"#{n.neuron} {'dead' if n.dead else 'dying'} in region {n.region} "
            f"[{num(n.pre_min, 2)}, {num(n.pre_max, 2)}], {num(n.breakpoint_distance, 2)} from a breakpoint"
            for n in death.stuck_neurons[:STUCK_SHOWN]
        ) + (" …" if len(death.stuck_neurons) > STUCK_SHOWN else "")
        rows.append(
            f'<tr><td>{i + 1}</td><td class="name">{esc(clip(layer.name))}</td><td>{death.units:,}</td>'
            + "".join(f"<td>{pct(share.fraction, 1)}</td>" for share in death.dormant)
            + f"<td>{pct(death.coverage_fraction, 1)}</td><td>{pct(death.rarely_positive_fraction, 1)}</td>"
            f"<td>{esc(stuck or '–')}</td></tr>"
        )
    taus = "".join(f"<th>dormant τ={share.tau:g}</th>" for share in report.neuron_death.dormant)
    head = (
        f"<tr><th>#</th><th>layer</th><th>units</th>{taus}<th>coverage t=0.25</th>"
        "<th>positive on &lt;1%</th><th>stuck neurons: region, pre-activation range, distance</th></tr>"
    )
    note = (
        '<p class="note">ReDo dormancy (Sokar et al. 2023): mean |output| over the layer mean ≤ τ; '
        "neuron coverage (Pei et al. 2017): min-max scaled output above t for some input; a "
        "convolutional feature map is one unit for both.</p>"
    )
    return f'<div class="scroll"><table class="layers">{head}{"".join(rows)}</table></div>{note}'


# ---------------------------------------------------------------------------------------------
# The page


def render_html(report: Report) -> str:
    """One self-contained HTML page (inline SVG and CSS, no script) for a report."""
    m, d, ps, p = report.model, report.dataset, report.pattern_similarity, report.provenance
    dying = dying_verdict(report)
    gap = gap_verdict(report)
    names = [layer.name for layer in report.layers]
    count = len(report.layers)

    collapse = collapse_verdict(report)
    gap_tone = {"clear": "good", "weak": "", "none": "bad"}.get(gap.level or "", "")
    cc = ps.chance_corrected
    chips = [
        _chip("neurons dying", pct(dying.overall_dying, 1), "bad" if dying.overall_dying >= 0.1 else "good"),
        _chip("neurons dead", pct(dying.overall_dead, 1), "bad" if dying.overall_dead >= 0.05 else "good"),
    ]
    if cc is not None:
        chips.append(_chip("class separation beyond chance", num(cc.separation, 2), gap_tone))
        chips.append(_chip(f"chance PS ({breakpoints_label(report)})", num(cc.chance)))
    chips += [
        _chip(
            "same − different PS_E (raw)", "n/a" if gap.gap is None else f"{gap.gap * 100:+.1f} pts", gap_tone
        ),
        _chip(f"PS_E random pairs ({breakpoints_label(report)})", num(ps.random.mean)),
    ]
    if report.neuron_death is not None:
        chips.append(_chip("ReDo-dormant units (τ = 0.025)", pct(report.neuron_death.dormant_fraction, 1)))
        chips.append(_chip("neuron coverage (t = 0.25)", pct(report.neuron_death.coverage_fraction, 1)))
    if d.accuracy is not None:
        chips.append(_chip("accuracy", pct(d.accuracy, 1)))
    td = report.transition_density
    if td is not None:
        chips.append(_chip(f"mean transition density ({td.points} points)", num(td.mean, 2)))
        if td.converged is not None:
            chips.append(_chip("mean transition density (k → ∞)", num(td.converged.mean, 2)))

    ps_legend = legend(
        [
            (f"{KIND_LABELS[k]} ({getattr(ps, k).pairs:,} pairs)", COLORS[k])
            for k in ("random", "same_label", "different_label")
        ]
    )
    callout = (
        '<p class="callout">The shaded band between the same-label (blue) and different-label (orange) '
        "curves is how differently the network responds to different classes; curves on top of each "
        "other mean it hardly tells them apart (the paper's expressivity indicator).</p>"
    )
    ps_fig = figure(
        "Pattern similarity PS_D(λ) by pair kind (paper Fig. 6)",
        _ps_curves_chart(report) + callout,
        "Share of pairs whose activation patterns agree on more than λ of all neurons.",
        ps_legend,
    )
    dead_fig = figure(
        "Dead and dying neurons per layer",
        _dead_dying_chart(report),
        f"Dying: the dominant region holds at least {pct(p.config.dying_threshold)} of inputs "
        "(dead included). "
        "Dead: one region for every input.",
        legend([("dying", COLORS["dying"]), ("dead", COLORS["dead"])]),
    )
    per_layer = {x.name: x for x in ps.per_layer}
    ps_series = [
        (kind, COLORS[kind], [getattr(per_layer[n], kind).mean if n in per_layer else None for n in names])
        for kind in ("random", "same_label", "different_label")
    ]
    ps_layer_fig = figure(
        "Pattern similarity PS_E per layer",
        _per_layer_lines(
            count, ps_series, y_label="mean PS", label="PS_E per layer", names=names, percent=True
        ),
        "Mean share of a layer's neurons in the same region for two inputs. Near 100% for every pair kind: "
        "the layer hardly distinguishes inputs.",
        legend([(KIND_LABELS[k], COLORS[k]) for k in ("random", "same_label", "different_label")]),
    )
    fig1_chart = _per_layer_lines(
        count,
        [("mean", COLORS["mean"], [x.post_activation_mean for x in report.layers])],
        y_label="mean",
        label="post-activation mean per layer",
        names=names,
        height=210,
    ) + _per_layer_lines(
        count,
        [("var", COLORS["var"], [x.post_activation_var for x in report.layers])],
        y_label="variance",
        label="post-activation variance per layer",
        names=names,
        zero_based_y=True,
        height=210,
    )
    fig1 = figure(
        "Post-activation mean and variance per layer (paper Fig. 1)",
        fig1_chart,
        "Mean and variance of the activation outputs over all inputs and neurons of each layer. "
        "A variance near "
        "zero means the layer's outputs barely change with the input.",
        legend([("mean", COLORS["mean"]), ("variance", COLORS["var"])]),
    )

    td_rows = _subsample(list(td.samples) if td is not None else [], MAX_SCATTER_POINTS)
    td_rows = [r for r in td_rows if r.td is not None]
    # PS vs prediction distance: the report's own sample of random pairs, else the TD pairs.
    ps_source = list(report.prediction_distance.samples) or (list(td.samples) if td is not None else [])
    ps_rows = _subsample(ps_source, MAX_SCATTER_POINTS)
    pair_legend = legend(
        [("same-label pair", COLORS["same_label"]), ("different-label pair", COLORS["different_label"])]
    )
    scatters: list[str] = []
    if td_rows:
        scatters.append(
            figure(
                "Transition density vs PS (paper Fig. 5)",
                _scatter(
                    td_rows,
                    lambda r: r.ps,
                    lambda r: None if r.td is None else float(r.td),
                    x_label="pattern similarity PS",
                    y_label="transition density TD",
                    label="TD vs PS",
                ),
                "Each dot is a pair of inputs. Fewer transitions on the line between them go with "
                "more similar patterns.",
                pair_legend,
            )
        )
        scatters.append(
            figure(
                "Prediction distance vs transition density",
                _scatter(
                    td_rows,
                    lambda r: None if r.td is None else float(r.td),
                    lambda r: r.prediction_distance,
                    x_label="transition density TD",
                    y_label="prediction distance",
                    label="distance vs TD",
                ),
                f"Rank correlation (Spearman): {num(report.prediction_distance.spearman_vs_td, 2)}.",
                pair_legend,
            )
        )
    scatters.append(
        figure(
            "Prediction distance vs PS" + ("" if td_rows else " (paper Fig. 5; no TD computed)"),
            _scatter(
                ps_rows,
                lambda r: r.ps,
                lambda r: r.prediction_distance,
                x_label="pattern similarity PS",
                y_label="prediction distance",
                label="distance vs PS",
            ),
            "Euclidean distance between the model outputs of the pair. Rank correlation (Spearman): "
            f"{num(report.prediction_distance.spearman_vs_ps, 2)}.",
            pair_legend,
        )
    )
    notes: list[str] = []
    td_total = len(td.samples) if td is not None else 0
    if td_total > len(td_rows):
        notes.append(f"{len(td_rows):,} of the report's {td_total:,} transition-density pairs drawn.")
    if len(ps_source) > len(ps_rows):
        notes.append(f"{len(ps_rows):,} of the report's {len(ps_source):,} pattern-similarity pairs drawn.")
    notes.extend(td.warnings if td is not None else [])
    if td is None and report.transition_density_skipped:
        notes.append(f"Transition density was skipped: {report.transition_density_skipped}.")
    elif td is None:
        notes.append('Transition density was skipped (config "transition_density": null).')
    sample_note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    if count > MAX_LAYERS_DRAWN:
        sample_note += (
            f'<p class="note">{count} layers: the per-layer charts show {MAX_LAYERS_DRAWN} evenly spaced '
            "layers; the table and the JSON have all.</p>"
        )

    model_rows: list[tuple[str, object]] = [
        ("format", m.format),
        ("sha256", m.sha256),
        ("activation layers", f"{len(m.layers):,}"),
        ("neurons analysed", f"{m.neurons:,}"),
    ]
    for inp in m.inputs[:MAX_LIST_ITEMS]:
        shape = "×".join("?" if s is None else str(s) for s in inp.shape)
        model_rows.append((f"input {clip(inp.name, 40)}", f"[{shape}] {inp.dtype}"))
    model_rows += [("warning", warning) for warning in m.warnings[:MAX_LIST_ITEMS]]
    dataset_rows: list[tuple[str, object]] = [
        ("samples", f"{d.samples:,}"),
        ("labels from", "the dataset's y" if d.labels_source == "dataset" else "the model's predictions"),
        ("classes", d.classes),
        ("accuracy", pct(d.accuracy, 2) if d.accuracy is not None else None),
        ("sha256", d.sha256),
        ("pair selection", ps.pair_selection),
    ]
    prov_rows: list[tuple[str, object]] = [
        ("neuronscope", p.neuronscope_version),
        ("python", p.python_version),
        ("torch", p.torch_version),
        ("onnx", p.onnx_version),
        ("onnxruntime", p.onnxruntime_version),
        ("device", p.device),
        ("runtime", p.runtime),
        ("seed", p.seed),
        ("created", p.created_at),
        ("report schema", report.schema_version),
    ]
    t = report.timings
    timing_rows: list[tuple[str, object]] = [
        ("load", f"{t.load_s:.2f} s"),
        ("capture", f"{t.capture_s:.2f} s"),
        ("pattern similarity", f"{t.pattern_similarity_s:.2f} s"),
        ("transition density", f"{t.transition_density_s:.2f} s"),
        ("total", f"{t.total_s:.2f} s"),
    ]
    config_text = _compact(_config_for_display(p.config))
    ok = collapse is None and dying.overall_dying < 0.1 and gap.level in (None, "clear")

    parts = [
        page_head(f"neuronscope report: {m.format} model, {count} layers"),
        "<header><h1>neuronscope report</h1>",
        f"<p>{esc(m.format)} model · {len(m.layers):,} activation layers · {m.neurons:,} neurons · "
        f"{d.samples:,} samples · {esc(clip(p.created_at, 40))}</p></header>",
        f'<section class="verdict{" ok" if ok else ""}">',
        f"{f'<p><strong>{esc(collapse)}</strong></p>' if collapse else ''}"
        f"<p>{esc(dying.text)}</p><p>{esc(gap.text)}</p>"
        f"{f'<p>{esc(death)}</p>' if (death := death_verdict(report)) else ''}</section>",
        f'<div class="chips">{"".join(chips)}</div>',
        "<h2>Do activation patterns tell classes apart?</h2>",
        f'<div class="grid">{ps_fig}{ps_layer_fig}</div>',
        "<h2>Dead and dying neurons</h2>",
        f'<div class="grid">{dead_fig}{fig1}</div>{_omitted_note(report)}',
        _death_table(report),
        "<h2>Pairs: pattern similarity, transition density and prediction distance</h2>",
        f'<div class="grid3">{"".join(scatters)}</div>{sample_note}',
        "<h2>Layers</h2>",
        _layer_table(report),
        "<h2>Model, dataset and provenance</h2>",
        '<div class="cols">',
        f'<div class="card"><h3>Model</h3>{_kv_table(model_rows)}</div>',
        f'<div class="card"><h3>Dataset</h3>{_kv_table(dataset_rows)}</div>',
        f'<div class="card"><h3>Provenance</h3>{_kv_table(prov_rows)}</div>',
        f'<div class="card"><h3>Timings</h3>{_kv_table(timing_rows)}</div>',
        "</div>",
        "<h2>Config used</h2>",
        f"<pre>{esc(config_text)}</pre>",
        '<p class="note">Long lists are shortened here; the JSON report holds the full config.</p>',
        "<footer>Pattern similarity, transition density and dying neurons after Jiang et al., "
        "“Delve into Neural Activations: Towards Understanding Dying Neurons”, IEEE TAI 2023.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
