"""A report's size, and the memory to render it as HTML, are bounded by the report's caps: the
dead / dying index lists over all layers (``MAX_LISTED_NEURONS``), the per-pair rows, the config
the API accepts. Measured with tracemalloc (rendering) and with the peak RSS of a fresh process
(parsing and rendering the stored JSON, as ``GET /v1/jobs/{id}/report.html`` does)."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from neuronscope.contracts.report import MAX_LISTED_NEURONS, MAX_REPORT_BYTES, Report
from neuronscope.report_html import render_html

ReportFactory = Callable[..., Report]
ROOT = Path(__file__).resolve().parents[2]
LAYERS = 30
NEURONS = 100_000


def with_dead_lists(report: Report, per_list: int, *, pairs: int = 0) -> dict[str, Any]:
    """``report`` as JSON data, every layer of ``NEURONS`` neurons all dead, ``per_list`` indices
    listed per list; ``pairs`` explicit pairs in the config echoed back."""
    data = report.model_dump(mode="json", by_alias=True)
    for layer in data["layers"]:
        layer.update(
            neurons=NEURONS,
            dead_count=NEURONS,
            dying_count=NEURONS,
            dead_fraction=1.0,
            dying_fraction=1.0,
            dead_neurons=list(range(per_list)),
            dying_neurons=list(range(per_list)),
            dead_neurons_omitted=NEURONS - per_list,
            dying_neurons_omitted=NEURONS - per_list,
        )
    if pairs:
        data["provenance"]["config"]["pairs"] = [[i, i + 1] for i in range(pairs)]
    return data


def render_peak(report: Report) -> tuple[int, int]:
    """(bytes of the page, peak bytes Python allocated while rendering it)."""
    tracemalloc.start()
    try:
        page = render_html(report)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return len(page.encode()), peak


@pytest.fixture
def base(make_report: ReportFactory) -> Report:
    return make_report(layer_names=[f"/blocks.{i}/Relu" for i in range(LAYERS)], neurons=64)


def test_the_contract_refuses_lists_over_the_report_wide_cap(base: Report) -> None:
    # The case: 30 layers × 100 k dead neurons listed (and as many dying).
    with pytest.raises(ValidationError, match=f"at most {MAX_LISTED_NEURONS} dead and dying"):
        Report.model_validate(with_dead_lists(base, NEURONS))
    Report.model_validate(with_dead_lists(base, MAX_LISTED_NEURONS // (2 * LAYERS)))


def test_rendering_memory_does_not_grow_with_the_lists_or_the_config(base: Report) -> None:
    small = Report.model_validate(with_dead_lists(base, 1))
    at_cap = Report.model_validate(with_dead_lists(base, MAX_LISTED_NEURONS // (2 * LAYERS), pairs=1_000_000))
    small_size, small_peak = render_peak(small)
    size, peak = render_peak(at_cap)
    assert peak < 8_000_000 and peak < 2 * small_peak + 1_000_000, (peak, small_peak)
    assert size < 1_000_000 and size < small_size + 10_000, (size, small_size)


def test_the_page_says_how_many_indices_the_json_left_out(base: Report) -> None:
    report = Report.model_validate(with_dead_lists(base, 1000))
    page = render_html(report)
    omitted = 2 * LAYERS * (NEURONS - 1000)
    assert f"lists 60,000 dead and dying neuron indices and leaves {omitted:,} out" in page
    assert "the counts and shares here are exact" in page
    assert "leaves" not in render_html(base)  # complete lists: no note


#: Parses and renders a stored report as the API does; prints the peak RSS above the RSS before
#: (VmHWM reset through /proc/self/clear_refs) and the page's length, or -1 when it was refused.
_PARSE_AND_RENDER = """
import sys
from neuronscope.contracts.report import load_report
from neuronscope.errors import InvalidInput
from neuronscope.report_html import render_html

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
try:
    page = len(render_html(load_report(data)))
except InvalidInput:
    page = -1
print(status("VmHWM") - before, page)
"""


def parse_and_render(stored: Path) -> tuple[int, int]:
    run = subprocess.run(
        [sys.executable, "-c", _PARSE_AND_RENDER, str(stored)],
        capture_output=True, text=True, cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip
    grown, page = (int(v) for v in run.stdout.split())
    return grown, page


def test_parsing_and_rendering_a_stored_report_at_the_caps_stays_small(base: Report, tmp_path: Path) -> None:
    # An API-accepted config is at most 1 MiB (Starlette's form-field limit): ~55 k explicit pairs.
    data = with_dead_lists(base, MAX_LISTED_NEURONS // (2 * LAYERS), pairs=55_000)
    stored = tmp_path / "report.json"
    stored.write_text(Report.model_validate(data).to_json())
    assert stored.stat().st_size < 6_000_000  # was 35 MB for 30 layers × 100 k dead neurons
    grown, page = parse_and_render(stored)
    assert grown < 96 * 1024 * 1024, grown  # was +461 MB
    assert 0 < page < 1_000_000


def test_an_oversized_stored_report_is_refused_unread(base: Report, tmp_path: Path) -> None:
    # A report written before the cap: 30 layers × 30 k dead and dying indices listed (27 MB;
    # with 100 k, 89 MB, and parsing it took +670 MB).
    stored = tmp_path / "old.json"
    stored.write_text(json.dumps(with_dead_lists(base, 30_000), indent=2))
    assert stored.stat().st_size > MAX_REPORT_BYTES
    grown, page = parse_and_render(stored)
    assert page == -1
    assert grown < 32 * 1024 * 1024, grown
