"""Comparing two reports: overall and per-layer deltas, layers matched by name."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from neuronscope.compare import compare_reports, format_comparison
from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report

ReportFactory = Callable[..., Report]


def test_overall_deltas(make_report: ReportFactory) -> None:
    old = make_report(seed=0)
    new = make_report(seed=0, shift=0.1)
    comparison = compare_reports(old, new)
    rows = {d.name: d for d in comparison.overall}
    ps = rows["pattern_similarity.different_label.mean"]
    assert ps.old == old.pattern_similarity.different_label.mean
    assert ps.new == new.pattern_similarity.different_label.mean
    assert ps.delta == pytest.approx(ps.new - ps.old)  # type: ignore[operator]
    dying = rows["max(layers.dying_fraction)"]
    assert dying.old == max(x.dying_fraction for x in old.layers)
    assert dying.delta is not None and dying.delta > 0
    assert rows["dataset.accuracy"].percent and rows["dataset.accuracy"].delta == 0
    assert comparison.only_old == [] and comparison.only_new == []
    assert "both reports are for the same model file" in " ".join(comparison.notes)


def test_layers_matched_by_name(make_report: ReportFactory) -> None:
    old = make_report(layer_names=["a", "b", "c"], dying=[0.0, 0.25, 0.5], neurons=8)
    new = make_report(layer_names=["c", "b", "d"], dying=[0.75, 0.25, 0.0], neurons=8)
    comparison = compare_reports(old, new)
    by_name = {layer.name: layer for layer in comparison.layers}
    assert set(by_name) == {"b", "c"}
    c = {m.name: m for m in by_name["c"].metrics}
    assert c["dying"].old == 0.5 and c["dying"].new == 0.75
    assert c["dying"].delta == pytest.approx(0.25)
    assert by_name["c"].old_index == 2 and by_name["c"].new_index == 0
    assert comparison.only_old == ["a"] and comparison.only_new == ["d"]
    text = format_comparison(comparison)
    assert "Only in the old report: a" in text and "Only in the new report: d" in text
    assert "+25.0 pts" in text


def test_renamed_layers_fall_back_to_position(make_report: ReportFactory) -> None:
    old = make_report(layer_names=["/fc1/Relu", "/fc2/Relu"], dying=[0.0, 0.5])
    new = make_report(layer_names=["relu_1", "relu_2"], dying=[0.0, 0.25])
    comparison = compare_reports(old, new)
    assert [layer.name for layer in comparison.layers] == ["/fc1/Relu → relu_1", "/fc2/Relu → relu_2"]
    assert any("matched by position" in note for note in comparison.notes)


def test_notes_on_different_data_and_config(make_report: ReportFactory) -> None:
    old = make_report()
    new = make_report(samples=60)
    new = new.model_copy(
        update={
            "provenance": new.provenance.model_copy(update={"config": AnalysisConfig(dying_threshold=0.8)}),
            "model": new.model.model_copy(update={"sha256": "cd" * 32}),
        }
    )
    notes = " ".join(compare_reports(old, new).notes)
    assert "differ in size" in notes
    assert "configs differ in: dying_threshold" in notes


def test_format_lists_overall_and_layers(sample_report: Report, make_report: ReportFactory) -> None:
    text = format_comparison(compare_reports(sample_report, make_report(shift=0.05)))
    lines = text.splitlines()
    assert lines[0].split()[:1] == ["Overall"] and "delta" in lines[0]
    assert any(line.startswith("pattern_similarity.same_label.mean") for line in lines)
    assert any(line.startswith("/layers.11/Relu") for line in lines)
    assert "Per layer" in text


def test_missing_values_show_as_na(make_report: ReportFactory) -> None:
    old = make_report(with_td=False)
    new = make_report()
    rows = {d.name: d for d in compare_reports(old, new).overall}
    assert rows["transition_density.mean"].delta is None
    assert "n/a" in format_comparison(compare_reports(old, new))
