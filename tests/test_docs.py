"""The guarantees in docs/security.md and docs/reliability.md name tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: ``path/test_x.py::test_name``, or ``::test_name`` for another test of the file named last.
_REFERENCE = re.compile(r"`((?:tests/)?[\w/]+\.py)?::(\w+)")


@pytest.mark.parametrize("doc", ["docs/security.md", "docs/reliability.md"])
def test_every_guarantee_names_a_test_that_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    current: Path | None = None
    missing, named = [], 0
    for match in _REFERENCE.finditer(text):
        if match.group(1):
            current = ROOT / "tests" / match.group(1).removeprefix("tests/")
        if current is None or current.name in ("file.py", "test_file.py"):
            continue
        named += 1
        source = current.read_text(encoding="utf-8") if current.exists() else ""
        if not re.search(rf"^(async )?def {match.group(2)}\(", source, re.MULTILINE):
            missing.append(f"{current.relative_to(ROOT)}::{match.group(2)}")
    assert named > 20, f"{doc} names only {named} tests"
    assert missing == [], f"{doc} names tests that do not exist: {missing}"
