"""The code base stays lint-clean and strictly typed (ruff, mypy --strict), checked like behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = run("ruff", "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    typed = run("mypy", "neuronscope", "service", "worker", "benchmarks")
    assert typed.returncode == 0, typed.stdout + typed.stderr
