"""Rows of the results table, the device they were measured on, and the markdown that shows them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime

import torch


@dataclass(frozen=True)
class Row:
    """One measurement. ``ratio`` is contender / baseline (lower is better unless ``note`` says
    otherwise); ``absolute`` carries the raw figures behind it; ``ok`` is ``None`` without a target."""

    section: str
    name: str
    ratio: float | None
    absolute: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}×"
    return f"{value:.3g}×" if value < 10 else f"{value:.1f}×"


def fmt_seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def cpu_name() -> str:
    """``model name`` from ``/proc/cpuinfo`` (the processor otherwise)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_vnni", "amx_tile")
                    return ", ".join(flag for flag in wanted if flag in flags) or "no AVX2"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def device_lines() -> list[str]:
    """What the figures were measured on: CPU, cores, threads, library versions."""
    import onnxruntime

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (GPU: not yet measured)"
    return [
        f"- **Device**: cpu `{cpu_name()}` ({_cpu_flags()}), {cores} cores; torch threads "
        f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()}); onnxruntime "
        "CPUExecutionProvider, default threads",
        f"- **GPU**: {gpu}",
        f"- **Versions**: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
    ]


def render(rows: list[Row], header: list[str], footer: list[str]) -> str:
    """The results as markdown: the header lines, one table, the footer lines."""
    lines = [
        "# neuronscope benchmark results",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        *header,
        "",
        "| # | Measurement | Ratio | Absolute | Target | Met |",
        "|---|---|---:|---|---|:-:|",
    ]
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "**no**")
        name = f"{row.name} ({row.note})" if row.note else row.name
        lines.append(
            f"| {row.section} | {name} | {fmt_ratio(row.ratio)} | {row.absolute} | {row.target} | {met} |"
        )
    return "\n".join([*lines, "", *footer, ""])
