"""The HTML report: self-contained, escaped, bounded in size, and saying the verdict in words."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.report_html import MAX_SCATTER_POINTS, MAX_TABLE_ROWS, render_html
from neuronscope.summary import dying_verdict, gap_verdict, layer_ranges

ReportFactory = Callable[..., Report]
XSS_NAMES = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "</style><marquee>x</marquee>",
    "a&b'c",
]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    collector.close()
    return collector


def test_sections_and_verdict(sample_report: Report) -> None:
    page = render_html(sample_report)
    assert page.startswith("<!DOCTYPE html>")
    text = " ".join(parse(page).text)
    for heading in [
        "Pattern similarity PS_D(λ) by pair kind",
        "Dead and dying neurons per layer",
        "Pattern similarity PS_E per layer",
        "Post-activation mean and variance per layer",
        "Transition density vs PS",
        "Prediction distance vs PS",
        "Config used",
        "Provenance",
    ]:
        assert heading in text, heading
    # The verdict in plain words, and the gap called out.
    assert dying_verdict(sample_report).text in text
    assert gap_verdict(sample_report).text in text
    assert "widest gap" in page
    assert page.count("<svg") >= 7


def test_self_contained_no_script_no_network(sample_report: Report) -> None:
    page = render_html(sample_report)
    collected = parse(page)
    assert "script" not in collected.tags
    assert not {"link", "img", "iframe", "object", "embed"} & set(collected.tags)
    for name, value in collected.attrs:
        assert name not in {"src", "href"} and not name.startswith("on"), (name, value)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the CSP forbids scripts and fetches even if something slipped in


def test_layer_names_are_escaped(make_report: ReportFactory) -> None:
    report = make_report(layer_names=XSS_NAMES, dying=[0.5, 0.1, 0.3, 0.0])
    page = render_html(report)
    for raw in XSS_NAMES[:3]:
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    collected = parse(page)
    assert "script" not in collected.tags and "img" not in collected.tags and "marquee" not in collected.tags
    assert sum(1 for tag in collected.tags if tag == "style") == 1
    assert all(not name.startswith("on") for name, _ in collected.attrs)


def test_svgs_are_well_formed_xml(make_report: ReportFactory) -> None:
    page = render_html(make_report(layer_names=XSS_NAMES, dying=[0.5, 0.1, 0.3, 0.0]))
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 7
    for svg in svgs:
        ET.fromstring(svg)  # raises on unbalanced or unescaped markup


def test_size_is_bounded(make_report: ReportFactory) -> None:
    small = render_html(make_report(samples=50))
    names = [f"block{i}.conv/Relu" for i in range(400)]
    big_report = make_report(layer_names=names, samples=6000, extra_ps_rows=20000)
    config = AnalysisConfig(pairs=[(i, i + 1) for i in range(50_000)])
    big_report = big_report.model_copy(
        update={"provenance": big_report.provenance.model_copy(update={"config": config})}
    )
    big = render_html(big_report)
    assert len(big) < 1_500_000, len(big)
    assert big.count('class="pt"') <= 3 * MAX_SCATTER_POINTS
    assert big.count("<tr") <= MAX_TABLE_ROWS + 1 + 40
    assert "more (50000 in all)" in big  # the explicit pair list is shortened
    assert "transition-density pairs drawn" in big
    assert len(small) < 200_000


def test_without_transition_density(make_report: ReportFactory) -> None:
    page = render_html(make_report(with_td=False))
    assert "Transition density was skipped" in page
    assert "Prediction distance vs PS (paper Fig. 5; no TD computed)" in page
    assert "Transition density vs PS" not in page


def test_missing_pair_kinds_and_nulls(sample_report: Report) -> None:
    data = sample_report.model_dump(mode="json", by_alias=True)
    same = data["pattern_similarity"]["same_label"]
    same.update(pairs=0, mean=None, std=None)
    same["ps_d"]["value"] = [None] * len(same["ps_d"]["value"])
    for layer in data["layers"]:
        layer["post_activation_mean"] = None
    data["dataset"]["accuracy"] = None
    page = render_html(Report.model_validate(data))
    assert "No same-label pairs were analysed" in page
    assert "no values" in page  # the empty post-activation mean chart says so


def test_layer_ranges() -> None:
    assert layer_ranges([5, 6, 7, 8]) == "6–9"
    assert layer_ranges([0, 2, 3, 9]) == "1, 3–4, 10"
    assert layer_ranges([]) == ""


def test_dying_verdict_names_the_layers(make_report: ReportFactory) -> None:
    report = make_report(layer_names=[f"l{i}" for i in range(9)], dying=[0, 0, 0, 0, 0, 0.5, 0.5, 0.25, 0.25])
    verdict = dying_verdict(report)
    assert verdict.layers == [5, 6, 7, 8]
    assert verdict.text.startswith(
        "38% of neurons in layers 6–9 sit in one region for at least 90% of inputs"
    )
    healthy = dying_verdict(make_report(dying=[0.0] * 6))
    assert healthy.text.startswith("Nearly every neuron is working")
