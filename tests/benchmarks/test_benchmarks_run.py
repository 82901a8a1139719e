"""Smoke test: the benchmark command runs end to end on tiny sizes and writes a complete table.

The figures themselves are not checked (a benchmark is not a timed test); only that every section
produced its rows and the markdown is well formed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_suite_runs_on_smoke_sizes(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--preset", "smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.strip() in done.stdout
    assert "**Device**: cpu" in text
    rows = [line for line in text.splitlines() if re.match(r"^\| \d \|", line)]
    sections = {row.split("|")[1].strip() for row in rows}
    assert sections == {"1", "2", "3", "4", "5", "6", "7", "8", "9"}
    assert all(row.count("|") == 7 for row in rows), rows
    assert not any("values differ" in row or "DIFFER" in row for row in rows), rows
    assert "EXTRAPOLATED" in text
    assert "benchmarks/service.py" in text


def test_unknown_section_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--preset", "smoke", "--sections", "99"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown sections ['99']" in done.stderr
