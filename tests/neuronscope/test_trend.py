"""``neuronscope trend`` on real checkpoints: a digits MLP analysed at initialisation, after
training, and after a third of its first layer was cut off (the dying a trend must show). The trend's
figures are the reports' own, its gates fail the pipeline when neurons die, its page is bounded and
safe."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from neuronscope.cli import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, main
from neuronscope.contracts import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.contracts.trend import Trend
from neuronscope.gates import GateError, evaluate_gates, parse_gates, report_data
from neuronscope.trend import build_trend, format_trend
from neuronscope.trend_html import MAX_TABLE_ROWS, render_trend_html
from worker.engine import analyze

CONFIG = AnalysisConfig.model_validate({"pairs": {"count": 4000}, "transition_density": None})
CUT = 11


def _export(net: nn.Module, path: Path) -> Path:
    torch.onnx.export(
        net,
        (torch.zeros(1, 64),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Report files of three checkpoints, in training order."""
    out = tmp_path_factory.mktemp("trend")
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    dataset = out / "test.npz"
    np.savez(dataset, x=x[1500:].numpy(), y=y[1500:].numpy())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    reports: dict[str, Path] = {}

    def checkpoint(label: str) -> None:
        report = analyze(_export(net, out / f"{label}.onnx"), dataset, CONFIG, trusted_model=True)
        reports[label] = out / f"{label}.json"
        reports[label].write_text(report.to_json())

    checkpoint("init")
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(x[:1500]), y[:1500]).backward()
        optimiser.step()
    checkpoint("trained")
    with torch.no_grad():
        first = net[0]
        assert isinstance(first, nn.Linear)
        first.bias[:CUT] = -1000.0
    checkpoint("cut")
    return reports


def _reports(paths: dict[str, Path]) -> list[Report]:
    return [Report.model_validate_json(path.read_text()) for path in paths.values()]


def test_the_trend_holds_each_reports_own_figures(checkpoints: dict[str, Path]) -> None:
    reports = _reports(checkpoints)
    trend = build_trend(reports, list(checkpoints))
    assert [c.label for c in trend.checkpoints] == ["init", "trained", "cut"]
    for index, report in enumerate(reports):
        neurons = sum(layer.neurons for layer in report.layers)
        dead = sum(layer.dead_count for layer in report.layers) / neurons
        assert trend.network.dead_fraction[index] == pytest.approx(dead)
        assert trend.network.accuracy[index] == report.dataset.accuracy
        cc = report.pattern_similarity.chance_corrected
        assert cc is not None
        assert trend.network.separation[index] == cc.separation
        assert report.neuron_death is not None
        assert trend.network.dormant_fraction[index] == report.neuron_death.dormant_fraction
        for layer, series in zip(report.layers, trend.layers, strict=True):
            assert series.name == layer.name
            assert series.dead_fraction[index] == layer.dead_fraction
    assert trend.change.dead_fraction == pytest.approx(
        trend.network.dead_fraction[-1] - trend.network.dead_fraction[0]  # type: ignore[operator]
    )
    assert trend.warnings == []


def test_cut_off_neurons_show_as_dying_in_the_trend(checkpoints: dict[str, Path]) -> None:
    reports = _reports(checkpoints)
    trend = build_trend(reports, list(checkpoints))
    first = trend.layers[0]
    trained, cut = first.dead_fraction[1], first.dead_fraction[2]
    assert trained is not None and cut is not None
    newly_dead = set(range(CUT)) - set(reports[1].layers[0].dead_neurons)
    assert newly_dead
    assert cut - trained >= len(newly_dead) / 32 - 1e-9
    dormant = first.dormant_fraction
    assert dormant[1] is not None and dormant[2] is not None
    assert dormant[2] > dormant[1] and dormant[2] >= CUT / 32  # a cut neuron outputs 0: ReDo-dormant
    accuracy = trend.network.accuracy
    assert accuracy[1] is not None and accuracy[0] is not None and accuracy[1] > accuracy[0] + 0.5
    text = format_trend(trend)
    assert "init" in text and "cut" in text and "dead neurons" in text


def test_trend_gates_read_the_trend(checkpoints: dict[str, Path]) -> None:
    trend = build_trend(_reports(checkpoints), list(checkpoints))
    gates = parse_gates(
        ["change.dead_fraction > 0.05", "max(layers.dead_fraction) > 0.9", "min(network.accuracy) < 0"],
        document=Trend,
    )
    failed = [outcome.failed for outcome in evaluate_gates(gates, report_data(trend))]
    assert failed == [True, False, False]


def test_a_trend_gate_on_a_wrong_path_names_the_valid_keys() -> None:
    with pytest.raises(GateError, match=r"valid keys there: .*dead_fraction"):
        parse_gates(["change.dead_fractoin > 0"], document=Trend)


def test_cli_trend_writes_json_and_html_and_fails_its_gate(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, page = tmp_path / "trend.json", tmp_path / "trend.html"
    paths = [str(p) for p in checkpoints.values()]
    code = main(
        ["trend", *paths, "--out", str(out), "--html", str(page), "--fail-if", "change.dead_fraction > 0.05"]
    )
    assert code == EXIT_GATE_FAILED
    captured = capsys.readouterr()
    assert "1 of 1 gates failed" in captured.err
    trend = Trend.model_validate_json(out.read_text())
    assert [c.label for c in trend.checkpoints] == list(checkpoints)
    text = page.read_text()
    assert "Content-Security-Policy" in text and "<script" not in text
    assert text.count("<svg") == 3
    ok = main(["trend", *paths, "--labels", "a,b,c", "--fail-if", "change.dead_fraction > 0.9", "-q"])
    assert ok == EXIT_OK


def test_cli_trend_refuses_one_report_and_mismatched_labels(
    checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in checkpoints.values()]
    assert main(["trend", paths[0]]) == EXIT_USAGE
    assert "expected 2 to" in capsys.readouterr().err
    assert main(["trend", *paths, "--labels", "a,b"]) == EXIT_USAGE
    assert "distinct checkpoint labels" in capsys.readouterr().err


def test_the_trend_warns_when_checkpoints_are_not_comparable(checkpoints: dict[str, Path]) -> None:
    reports = _reports(checkpoints)
    renamed = json.loads(reports[1].to_json())
    renamed["dataset"]["sha256"] = "0" * 64
    renamed["layers"][0]["name"] = "elsewhere"
    other = Report.model_validate(renamed)
    trend = build_trend([reports[0], other], ["a", "b"])
    assert any("different datasets" in w for w in trend.warnings)
    assert any("missing from checkpoints b" in w for w in trend.warnings)
    assert any("missing from checkpoints a" in w for w in trend.warnings)
    assert trend.layers[0].dead_fraction[1] is None


def test_the_page_escapes_names_and_stays_bounded(checkpoints: dict[str, Path]) -> None:
    report = _reports(checkpoints)[0]
    data = json.loads(report.to_json())
    layer = data["layers"][0]
    data["layers"] = [{**layer, "name": f"<script>alert({i})</script>"} for i in range(MAX_TABLE_ROWS + 50)]
    data["model"]["layers"] = []
    data["pattern_similarity"]["per_layer"] = []
    many = Report.model_validate(data)
    page = render_trend_html(build_trend([many, many], ["x<y", "z"]))
    assert "<script>" not in page
    assert html.escape("<script>alert(3)</script>") in page
    assert page.count("<tr><td>") == MAX_TABLE_ROWS
    assert "50 more layers" in page
