"""The trend as one self-contained HTML page (inline SVG and CSS, no script): the network's figures
against the checkpoint, dead share and separation per layer, and a table of every layer.

The page stays bounded whatever the trend: at most :data:`MAX_LAYER_LINES` layers drawn per chart
(those that moved most) and :data:`MAX_TABLE_ROWS` rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from neuronscope.contracts.trend import Trend
from neuronscope.html_charts import (
    Frame,
    axes,
    clip,
    esc,
    figure,
    legend,
    nice_range,
    page_head,
    polyline,
    svg,
)
from neuronscope.summary import num, pct

MAX_LAYER_LINES = 12
MAX_TABLE_ROWS = 300
MAX_TICK_LABELS = 12
PALETTE = (
    "#1f6fb4", "#e06c00", "#2a9d8f", "#a4161a", "#6a4c93", "#7a7a7a",
    "#f4a259", "#3a86ff", "#8ac926", "#ff006e", "#5b6572", "#b5838d",
)  # fmt: skip
NETWORK_LINES: list[tuple[str, str, str]] = [
    ("dead_fraction", "dead neurons", "#a4161a"),
    ("dying_fraction", "dying neurons", "#f4a259"),
    ("label_dying_fraction", "label-dying neurons", "#6a4c93"),
    ("never_active_fraction", "never active", "#7a7a7a"),
    ("dormant_fraction", "ReDo-dormant units", "#b5838d"),
    ("coverage_fraction", "neuron coverage", "#3a86ff"),
    ("separation", "separation beyond chance", "#1f6fb4"),
    ("accuracy", "accuracy", "#2a9d8f"),
    ("living_fraction", "living inputs", "#8ac926"),
]


def _ticks(labels: Sequence[str]) -> list[tuple[float, str]]:
    every = max(1, -(-len(labels) // MAX_TICK_LABELS))
    return [
        (float(i), clip(label, 14))
        for i, label in enumerate(labels)
        if i % every == 0 or i == len(labels) - 1
    ]


def _chart(
    labels: Sequence[str], lines: Sequence[tuple[str, Sequence[float | None], str]], y_label: str
) -> str:
    """Lines over checkpoints; a ``None`` breaks a line."""
    values = [v for _, series, _ in lines for v in series if v is not None]
    lo, hi, step = nice_range(min([0.0, *values]), max([1.0, *values]))
    frame = Frame(0.0, float(max(len(labels) - 1, 1)), lo, hi)
    body = axes(
        frame, x_label="checkpoint", y_label=y_label, x_step=None, y_step=step, x_ticks=_ticks(labels)
    )
    for _, series, color in lines:
        run: list[tuple[float, float]] = []
        for index, value in enumerate([*series, None]):
            if value is None:
                body.append(polyline(run, color) if len(run) > 1 else "")
                body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in run]
                run = []
            else:
                run.append((frame.sx(index), frame.sy(value)))
    return svg(frame, y_label, body)


def _moved(series: Sequence[float | None]) -> float:
    known = [v for v in series if v is not None]
    return max(known) - min(known) if known else -1.0


def _layer_chart(trend: Trend, attr: str, y_label: str, title: str) -> str:
    labels = [c.label for c in trend.checkpoints]
    ranked = sorted(trend.layers, key=lambda layer: _moved(getattr(layer, attr)), reverse=True)
    drawn = ranked[:MAX_LAYER_LINES]
    lines = [(layer.name, getattr(layer, attr), PALETTE[i % len(PALETTE)]) for i, layer in enumerate(drawn)]
    caption = f"{len(drawn)} of {len(trend.layers)} layers: those whose {y_label} moved most."
    return figure(
        title, _chart(labels, lines, y_label), caption, legend([(clip(n, 40), c) for n, _, c in lines])
    )


def _table(trend: Trend) -> str:
    head = "<tr><th>#</th><th>layer</th><th>op</th>" + "".join(
        f"<th>{esc(clip(c.label, 16))}</th>" for c in trend.checkpoints
    )
    rows = []
    for index, layer in enumerate(trend.layers[:MAX_TABLE_ROWS]):
        cells = "".join(
            f"<td>{pct(dead, 0)} · {num(sep, 2)}</td>"
            for dead, sep in zip(layer.dead_fraction, layer.separation, strict=True)
        )
        rows.append(
            f'<tr><td>{index + 1}</td><td class="name" title="{esc(layer.name)}">{esc(clip(layer.name))}</td>'
            f"<td>{esc(layer.op_type)}</td>{cells}</tr>"
        )
    more = (
        f'<p class="note">{len(trend.layers) - MAX_TABLE_ROWS} more layers in the JSON trend.</p>'
        if len(trend.layers) > MAX_TABLE_ROWS
        else ""
    )
    return f'<div class="scroll"><table class="layers">{head}</tr>{"".join(rows)}</table></div>{more}'


def render_trend_html(trend: Trend) -> str:
    """One self-contained HTML page for a trend."""
    labels = [c.label for c in trend.checkpoints]
    network = [(title, getattr(trend.network, attr), color) for attr, title, color in NETWORK_LINES]
    shown = [line for line in network if any(v is not None for v in line[1])]
    network_fig = figure(
        "The network over training",
        _chart(labels, shown, "share"),
        "Dead: one region for every input. Dying: one region for most inputs. Label-dying: inputs of "
        "different labels kept in one region. Separation: class separation of the patterns beyond chance.",
        legend([(title, color) for title, _, color in shown]),
    )
    warnings = "".join(f"<p>{esc(w)}</p>" for w in trend.warnings)
    change = trend.change
    return "\n".join(
        [
            page_head(f"neuronscope trend: {len(labels)} checkpoints"),
            "<header><h1>neuronscope trend</h1>",
            f"<p>{len(labels)} checkpoints · {len(trend.layers)} layers · from {esc(clip(labels[0], 40))} "
            f"to {esc(clip(labels[-1], 40))}</p></header>",
            f'<section class="verdict{"" if trend.warnings else " ok"}">'
            f"<p>Dead neurons {pct(change.dead_fraction, 1)} points, dying {pct(change.dying_fraction, 1)}, "
            f"separation beyond chance {num(change.separation, 2)} from first to last checkpoint.</p>"
            f"{warnings}</section>",
            f'<div class="grid">{network_fig}</div>',
            "<h2>Layers</h2>",
            '<div class="grid">'
            + _layer_chart(trend, "dead_fraction", "dead share", "Dead share per layer")
            + _layer_chart(trend, "separation", "separation", "Separation beyond chance per layer")
            + "</div>",
            "<h2>Every layer: dead share · separation</h2>",
            _table(trend),
            "</main></body></html>",
        ]
    )
