"""The drawing kit of the HTML pages (report, trend): escaping, SVG line charts with nice axes,
legends, figure cards, and the one stylesheet. Every string drawn goes through :func:`esc`."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

MAX_NAME_CHARS = 80
#: No script, no network: styles inline, images only as data: URLs.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(value: object) -> str:
    """HTML-escape anything (quotes included) for text and attribute values."""
    return html.escape(str(value), quote=True)


def clip(text: str, limit: int = MAX_NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# SVG primitives


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


def nice_range(lo: float, hi: float, target: int = 5) -> tuple[float, float, float]:
    """A rounded ``[lo, hi]`` that covers the data, and its tick step."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target)
    return float(math.floor(lo / step + 1e-9) * step), float(math.ceil(hi / step - 1e-9) * step), step


def tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        return "0"
    if step >= 1 and abs(value) < 1e6:
        return f"{value:.0f}"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.1e}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals % 1 > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


def fmt(value: float) -> str:
    return f"{value:.1f}"


@dataclass
class Frame:
    """A plot area inside an SVG of ``width`` × ``height`` user units."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 600
    height: int = 300
    left: int = 58
    right: int = 14
    top: int = 14
    bottom: int = 46

    def sx(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def sy(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (y - self.y0) / span * (self.height - self.top - self.bottom)


def svg(frame: Frame, label: str, body: Iterable[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def axes(
    frame: Frame,
    *,
    x_label: str,
    y_label: str,
    x_step: float | None,
    y_step: float,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_format: Callable[[float], str] | None = None,
) -> list[str]:
    out: list[str] = []
    left, right = frame.left, frame.width - frame.right
    bottom, top = frame.height - frame.bottom, frame.top
    y = frame.y0
    count = 0
    while y <= frame.y1 + y_step * 1e-6 and count < 50:
        py = frame.sy(y)
        out.append(f'<line class="grid" x1="{left}" y1="{fmt(py)}" x2="{right}" y2="{fmt(py)}"/>')
        text = y_format(y) if y_format else tick_label(y, y_step)
        out.append(
            f'<text class="tick" x="{left - 6}" y="{fmt(py + 4)}" text-anchor="end">{esc(text)}</text>'
        )
        y += y_step
        count += 1
    if x_ticks is None and x_step is not None:
        ticks: list[tuple[float, str]] = []
        x = frame.x0
        while x <= frame.x1 + x_step * 1e-6 and len(ticks) < 50:
            ticks.append((x, tick_label(x, x_step)))
            x += x_step
        x_ticks = ticks
    for x, text in x_ticks or []:
        px = frame.sx(x)
        out.append(f'<line class="tickmark" x1="{fmt(px)}" y1="{bottom}" x2="{fmt(px)}" y2="{bottom + 4}"/>')
        out.append(
            f'<text class="tick" x="{fmt(px)}" y="{bottom + 16}" text-anchor="middle">{esc(text)}</text>'
        )
    out.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>')
    out.append(
        f'<text class="axis-label" x="{fmt((left + right) / 2)}" y="{frame.height - 8}" '
        f'text-anchor="middle">{esc(x_label)}</text>'
    )
    cy = (top + bottom) / 2
    out.append(
        f'<text class="axis-label" x="14" y="{fmt(cy)}" text-anchor="middle" '
        f'transform="rotate(-90 14 {fmt(cy)})">{esc(y_label)}</text>'
    )
    return out


def layer_ticks(count: int, max_labels: int = 20) -> list[tuple[float, str]]:
    every = max(1, math.ceil(count / max_labels))
    return [(float(n), str(n)) for n in range(1, count + 1) if (n - 1) % every == 0 or n == count]


def polyline(
    points: Sequence[tuple[float, float]], color: str, *, dash: bool = False, width: float = 2
) -> str:
    if not points:
        return ""
    coords = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)
    extra = ' stroke-dasharray="6 4"' if dash else ""
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{extra} points="{coords}"/>'


def legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{color}"></i>{esc(label)}</span>' for label, color in items)
        + "</div>"
    )


def figure(title: str, chart: str, caption: str, legend: str = "") -> str:
    return (
        f'<figure class="card"><h3>{esc(title)}</h3>{legend}{chart}'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def empty_chart(message: str) -> str:
    frame = Frame(0, 1, 0, 1, height=120)
    return svg(
        frame,
        message,
        [f'<text class="empty" x="{frame.width / 2}" y="64" text-anchor="middle">{esc(message)}</text>'],
    )


CSS = """
:root{color-scheme:light;--ink:#1d232b;--muted:#5b6572;--line:#d9dee5;--bg:#f5f7fa;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
header h1{font-size:22px;margin:0 0 2px}
header p{margin:0;color:var(--muted)}
h2{font-size:18px;margin:32px 0 12px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:0 0 6px}
.verdict{background:var(--card);border-left:6px solid #e06c00;border-radius:8px;padding:16px 20px;
margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.07)}
.verdict.ok{border-left-color:#2a9d8f}
.verdict p{margin:6px 0;font-size:17px}
.chips{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.chip{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px}
.chip b{display:block;font-size:20px}
.chip span{color:var(--muted);font-size:12.5px}
.chip.bad b{color:#a4161a}.chip.good b{color:#1b7f5a}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:0}
figcaption{color:var(--muted);font-size:13px;margin-top:4px}
.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:#edf0f4;stroke-width:1}
.chart .axis,.chart .tickmark{stroke:#8a94a3;stroke-width:1}
.chart .tick{font-size:11px;fill:#5b6572}
.chart .axis-label{font-size:12px;fill:#3b4552}
.chart .empty{font-size:14px;fill:#8a94a3}
.chart .gap-area{fill:#1f6fb4;opacity:.08}
.chart .gap-line{stroke:#1d232b;stroke-width:1.5;stroke-dasharray:3 3}
.chart .gap-text{font-size:12px;font-weight:600;fill:#1d232b;paint-order:stroke;stroke:#fff;stroke-width:4px;
stroke-linejoin:round}
.chart .pt{opacity:.55}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;color:var(--muted);margin-bottom:4px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.callout{background:#eef5fc;border-radius:6px;padding:8px 12px;margin:8px 0 0;font-size:14px}
table{border-collapse:collapse;font-size:13px}
.kv th{text-align:left;color:var(--muted);font-weight:500;padding:2px 14px 2px 0;vertical-align:top;
white-space:nowrap}
.layers{width:100%}
.kv td{padding:2px 0;word-break:break-all}
.layers th,.layers td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
.layers th{background:#eef1f5;position:sticky;top:0}
.layers td.name,.layers th:nth-child(2){text-align:left;max-width:320px;overflow:hidden;
text-overflow:ellipsis}
.layers tr.warn td{background:#fff4e8}
.scroll{overflow:auto;max-height:520px;border:1px solid var(--line);border-radius:8px;background:var(--card)}
pre{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px;overflow:auto;
font-size:12.5px;max-height:420px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}
.note{color:var(--muted);font-size:13px}
footer{margin-top:36px;color:var(--muted);font-size:12.5px}
"""


def page_head(title: str) -> str:
    """The opening of a self-contained page: charset, the CSP, viewport, title, stylesheet, ``<main>``."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style></head><body><main>"
    )
