"""The HTML report in a real browser: Debian's headless chromium loads it with no console message
(no script error, no blocked fetch, no injected markup) and the charts paint.

Skipped when no chromium is installed (``apt-get install chromium``; scripts/test.sh does it).
Set ``NEURONSCOPE_SCREENSHOT_DIR`` to keep the screenshot for a look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pngcheck import decode_png

from neuronscope.contracts.report import Report
from neuronscope.report_html import COLORS, render_html

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 1280, 2000


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium installed (apt-get install chromium)")


def render_in_browser(page: Path, out: Path, profile: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot of ``page`` and the console messages chromium logged while loading it."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", f"--window-size={WIDTH},{HEIGHT}",
         f"--screenshot={out}", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return decode_png(out), console


def color_pixels(pixels: np.ndarray, hex_color: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels.astype(np.int16) - rgb).max(axis=2) <= tolerance).sum())


def test_report_renders_without_console_errors(tmp_path: Path, make_report: Callable[..., Report]) -> None:
    names = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>'] + [
        f"/layers.{i}/Relu" for i in range(7)
    ]
    report = make_report(
        layer_names=names, dying=[0.0, 0.02, 0.03, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7], samples=300
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    shot = tmp_path / "report.png"

    pixels, console = render_in_browser(page, shot, tmp_path / "profile")

    assert console == [], "\n".join(console)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert shot.stat().st_size > 20_000
    assert float(pixels.std()) > 10.0, "the page looks blank"
    background = (np.abs(pixels.astype(np.int16) - pixels[5, 5].astype(np.int16)).max(axis=2) > 8).mean()
    assert background > 0.05, f"only {background:.1%} of the page differs from its background"
    # The charts painted: each series colour covers real area (curves, bars, dots).
    for key in ("same_label", "different_label", "dead", "dying", "mean", "var"):
        assert color_pixels(pixels, COLORS[key]) > 150, key
    keep = os.environ.get("NEURONSCOPE_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")


def test_console_errors_are_caught(tmp_path: Path) -> None:
    """The check above is not vacuous: a page with a script error is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>notAFunction();</script></body></html>")
    _pixels, console = render_in_browser(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("Uncaught ReferenceError" in line for line in console), console
