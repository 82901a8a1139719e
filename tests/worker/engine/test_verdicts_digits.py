"""Verdicts on real networks trained on scikit-learn's digits: they never contradict the accuracy
or chance. A collapsed net (accuracy near chance, patterns nearly identical) is called collapsed, a
healthy ReLU and a sigmoid net separate classes beyond chance, planted dead neurons are named.

The nets are tiny (64 → 32 → 32 → 10, full-batch Adam) and trained once per session."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from neuronscope.compare import compare_reports, format_comparison
from neuronscope.contracts import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.gates import evaluate_gates, parse_gates, report_data
from neuronscope.report_html import render_html
from neuronscope.summary import (
    collapse_verdict,
    death_verdict,
    dying_verdict,
    gap_verdict,
    headline,
    summarize,
)
from worker.engine import analyze

CONFIG = AnalysisConfig.model_validate({"pairs": "all", "transition_density": None})


def _net(activation: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), activation(), nn.Linear(32, 32), activation(), nn.Linear(32, 10))


def _train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()


@pytest.fixture(scope="session")
def digit_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Reports of four nets on 300 held-out digits: relu, sigmoid, collapsed, planted_dead."""
    out = tmp_path_factory.mktemp("verdict_digits")
    features, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(features))
    features = (features[order] / 16.0).astype(np.float32)
    labels = labels[order].astype(np.int64)
    test = out / "test.npz"
    np.savez(test, x=features[1500:1800], y=labels[1500:1800])
    x, y = torch.from_numpy(features[:1500]), torch.from_numpy(labels[:1500])

    nets: dict[str, nn.Sequential] = {}
    torch.manual_seed(0)
    nets["relu"] = _net(nn.ReLU)
    _train(nets["relu"], x, y, lr=0.01, steps=120)
    torch.manual_seed(0)
    nets["sigmoid"] = _net(nn.Sigmoid)
    _train(nets["sigmoid"], x, y, lr=0.01, steps=200)
    # Collapsed: every sigmoid saturated from the start (biases +12), so the gradients vanish and
    # training with plain SGD never moves the net off chance.
    torch.manual_seed(0)
    collapsed = _net(nn.Sigmoid)
    with torch.no_grad():
        for index in (0, 2):
            layer = collapsed[index]
            assert isinstance(layer, nn.Linear)
            layer.weight.mul_(0.01)
            layer.bias.fill_(12.0)
    optimiser = torch.optim.SGD(collapsed.parameters(), lr=0.05)
    for _ in range(50):
        optimiser.zero_grad()
        nn.functional.cross_entropy(collapsed(x), y).backward()
        optimiser.step()
    nets["collapsed"] = collapsed
    # Planted dead: the trained ReLU net with 16 of its 32 first-layer neurons cut off (zero weights,
    # negative bias: one region for every input), then the rest retrained around them.
    torch.manual_seed(0)
    planted = _net(nn.ReLU)
    planted.load_state_dict(nets["relu"].state_dict())
    first = planted[0]
    assert isinstance(first, nn.Linear)
    with torch.no_grad():
        first.weight[:16] = 0.0
        first.bias[:16] = -1.0
    nets["planted_dead"] = planted

    reports = {}
    for name, model in nets.items():
        path = out / f"{name}.pt"
        torch.jit.trace(model.eval(), torch.zeros(1, 64)).save(str(path))
        reports[name] = analyze(path, test, CONFIG, trusted_model=True)
    return reports


def test_collapsed_net_is_called_collapsed_never_separating(digit_reports: dict[str, Report]) -> None:
    report = digit_reports["collapsed"]
    assert report.dataset.accuracy is not None and report.dataset.accuracy < 0.2
    cc = report.pattern_similarity.chance_corrected
    assert cc is not None and cc.chance is not None and cc.chance > 0.9
    text = collapse_verdict(report)
    assert text is not None and text.startswith("The network has collapsed")
    gap = gap_verdict(report)
    assert gap.level == "none"
    assert "clearly" not in gap.text and "near chance" in gap.text
    assert headline(report)[0] == text
    assert summarize(report).splitlines()[1] == "Verdict: " + text


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_trained_nets_separate_classes_beyond_chance(digit_reports: dict[str, Report], name: str) -> None:
    report = digit_reports[name]
    assert report.dataset.accuracy is not None and report.dataset.accuracy > 0.85
    assert collapse_verdict(report) is None
    cc = report.pattern_similarity.chance_corrected
    assert cc is not None and cc.separation is not None and cc.lift_same is not None
    assert cc.lift_same > 0 and cc.separation > 0.15
    # Over all pairs the chance-corrected figures are the raw PS_E of each pair kind.
    ps = report.pattern_similarity
    assert cc.chance == pytest.approx(ps.random.mean, abs=1e-9)
    assert cc.same_label == pytest.approx(ps.same_label.mean, abs=1e-9)
    assert cc.different_label == pytest.approx(ps.different_label.mean, abs=1e-9)
    gap = gap_verdict(report)
    assert gap.level == "clear", gap.text
    assert "Γ = " in gap.text and "Γ = " in summarize(report)
    for layer, similarity in zip(report.layers, ps.per_layer, strict=True):
        assert similarity.chance_corrected is not None and layer.label_agreement is not None


def test_planted_dead_neurons_are_named_and_label_dying(digit_reports: dict[str, Report]) -> None:
    report = digit_reports["planted_dead"]
    first = report.layers[0]
    assert first.dead_count >= 16 and set(range(16)) <= set(first.dead_neurons)
    assert first.label_agreement is not None and first.label_agreement.label_dying_count >= 16
    assert "dead" in dying_verdict(report).text
    healthy = digit_reports["relu"].layers[0]
    assert healthy.label_agreement is not None
    # A dead neuron keeps every pair in one region, so it is label-dying too; planting adds dead ones.
    assert first.label_agreement.label_dying_count >= first.dead_count > healthy.dead_count
    assert first.label_agreement.label_dying_count >= healthy.label_agreement.label_dying_count


def test_html_report_leads_with_the_collapse_and_the_chance_corrected_figures(
    digit_reports: dict[str, Report],
) -> None:
    collapsed = render_html(digit_reports["collapsed"])
    verdict = collapse_verdict(digit_reports["collapsed"])
    assert verdict is not None and html.escape(verdict, quote=True) in collapsed
    assert '<section class="verdict">' in collapsed, "a collapsed net is never shown as healthy"
    healthy = render_html(digit_reports["relu"])
    assert "class separation beyond chance" in healthy and "chance PS (Γ = {0} in 2 layers)" in healthy
    assert "The network has collapsed" not in healthy


def test_gates_read_the_chance_corrected_paths(digit_reports: dict[str, Report]) -> None:
    gates = parse_gates(
        [
            "pattern_similarity.chance_corrected.separation < 0.1",
            "max(layers.label_agreement.label_dying_fraction) > 0.9",
            "min(pattern_similarity.per_layer.chance_corrected.lift_same) < 0",
        ]
    )
    collapsed = evaluate_gates(gates, report_data(digit_reports["collapsed"]))
    healthy = evaluate_gates(gates, report_data(digit_reports["relu"]))
    assert collapsed[0].failed and not healthy[0].failed
    assert collapsed[1].failed and not healthy[1].failed
    assert not healthy[2].failed
    cc = digit_reports["relu"].pattern_similarity.chance_corrected
    assert cc is not None and healthy[0].value == cc.separation


def test_flat_region_death_and_dead_data_points(digit_reports: dict[str, Report]) -> None:
    planted, healthy, sigmoid = (digit_reports[name] for name in ("planted_dead", "relu", "sigmoid"))
    first = planted.layers[0].flat
    assert first is not None and first.flat_regions == [0]
    # Every planted neuron (zero weights, bias -1) sits in ReLU's flat region for every input.
    # Never active implies dead (one region for every input), not the reverse: a ReLU always in its
    # linear region is dead by the paper's definition yet passes gradients.
    assert 16 <= first.never_active_count <= planted.layers[0].dead_count
    assert first.rarely_active_count >= first.never_active_count
    assert planted.dataset.dead_data_points is not None and healthy.dataset.dead_data_points is not None
    assert planted.dataset.dead_data_points >= healthy.dataset.dead_data_points
    assert planted.dataset.living_fraction == 1 - planted.dataset.dead_data_points / planted.dataset.samples
    # Sigmoid has no flat region: no neuron or input dies that way.
    for layer in sigmoid.layers:
        assert layer.flat is not None and layer.flat.flat_regions == [] and layer.flat.never_active_count == 0
    assert sigmoid.dataset.dead_data_points == 0 and sigmoid.dataset.living_fraction == 1.0


def test_planted_dead_neurons_are_dormant_uncovered_and_stuck_below_their_breakpoint(
    digit_reports: dict[str, Report],
) -> None:
    planted, healthy = digit_reports["planted_dead"], digit_reports["relu"]
    first, healthy_first = planted.layers[0].death, healthy.layers[0].death
    assert first is not None and healthy_first is not None
    assert first.units == planted.layers[0].neurons == 32
    # Zero output for every input: ReDo-dormant at τ = 0, never positive, never covered at any t.
    dormant_at = {share.tau: share.count for share in first.dormant}
    assert dormant_at[0.0] >= 16 and dormant_at[0.0] == first.never_positive_count
    assert dormant_at[0.0] <= dormant_at[0.025] <= dormant_at[0.1]
    assert first.coverage[0].threshold == 0.0 and first.coverage[0].covered <= 32 - 16
    assert first.dormant_fraction > healthy_first.dormant_fraction
    assert first.coverage_fraction < healthy_first.coverage_fraction
    stuck = {n.neuron: n for n in first.stuck_neurons}
    assert sorted(stuck) == sorted({*planted.layers[0].dead_neurons, *planted.layers[0].dying_neurons})
    for index in range(16):
        # Zero weights, bias -1: the pre-activation is -1 for every input, region 0 = (-inf, 0], 1 below 0.
        neuron = stuck[index]
        assert neuron.dead and neuron.region == 0 and neuron.region_share == 1.0
        assert neuron.pre_min == neuron.pre_max == -1.0 and neuron.breakpoint_distance == 1.0
    for layer in planted.layers:
        assert layer.death is not None
        for neuron in layer.death.stuck_neurons:
            assert neuron.pre_min is not None and neuron.pre_max is not None
            assert neuron.pre_min <= neuron.pre_max and neuron.breakpoint_distance is not None
            if not neuron.dead:
                assert neuron.region_share >= planted.provenance.config.dying_threshold
    text = death_verdict(planted)
    assert text is not None and "ReDo-dormant" in text and "from their nearest breakpoint" in text
    assert "Death: " + text in summarize(planted) and text in headline(planted)


def test_healthy_nets_are_covered_and_barely_dormant(digit_reports: dict[str, Report]) -> None:
    relu, sigmoid = digit_reports["relu"], digit_reports["sigmoid"]
    assert relu.neuron_death is not None and sigmoid.neuron_death is not None
    assert relu.neuron_death.coverage_fraction >= 0.75 and relu.neuron_death.dormant_fraction <= 0.25
    # A sigmoid's output is positive and never zero: nothing is dormant, rarely positive or uncovered.
    assert (
        sigmoid.neuron_death.dormant_fraction == 0.0 and sigmoid.neuron_death.rarely_positive_fraction == 0.0
    )
    assert sigmoid.neuron_death.coverage_fraction == 1.0
    for report in (relu, sigmoid):
        death = report.neuron_death
        assert death.units == sum(layer.death.units for layer in report.layers if layer.death)
        assert [s.tau for s in death.dormant] == [0.0, 0.025, 0.1]
        text = death_verdict(report)
        assert text is not None and "near chance" not in text


def test_collapsed_net_reads_collapsed_whatever_the_death_measures_say(
    digit_reports: dict[str, Report],
) -> None:
    report = digit_reports["collapsed"]
    assert report.neuron_death is not None
    # Saturated sigmoids output about 1: ReDo sees no dormant unit. The verdict must still not
    # read as healthy.
    assert report.neuron_death.dormant_fraction == 0.0
    text = death_verdict(report)
    assert text is not None and "near chance all the same" in text
    assert headline(report)[0].startswith("The network has collapsed")
    for layer in report.layers:
        assert layer.death is not None
        for neuron in layer.death.stuck_neurons:
            # Every neuron sits at about +12 with Γ = {-0.5, 0, 0.5}: the last region, far from 0.5.
            assert neuron.dead and neuron.region == 3
            assert neuron.breakpoint_distance is not None and neuron.breakpoint_distance > 5


def test_gates_and_html_read_the_death_paths(digit_reports: dict[str, Report]) -> None:
    gates = parse_gates(
        [
            "max(layers.death.dormant_fraction) > 0.3",
            "neuron_death.coverage_fraction < 0.8",
            "dataset.living_fraction < 0.99",
            "max(layers.death.dormant.0.fraction) > 0.3",
        ]
    )
    planted = evaluate_gates(gates, report_data(digit_reports["planted_dead"]))
    healthy = evaluate_gates(gates, report_data(digit_reports["relu"]))
    assert planted[0].failed and not healthy[0].failed
    assert planted[1].failed and not healthy[1].failed
    assert not healthy[2].failed
    assert planted[3].failed and not healthy[3].failed
    page = render_html(digit_reports["planted_dead"])
    assert "ReDo-dormant units (τ = 0.025)" in page and "dormant τ=0.025" in page
    assert "#0 dead in region 0 [-1.00, -1.00], 1.00 from a breakpoint" in page


def test_compare_lists_the_death_figures_per_layer_and_overall(digit_reports: dict[str, Report]) -> None:
    healthy, planted = digit_reports["relu"], digit_reports["planted_dead"]
    comparison = compare_reports(healthy, planted)
    overall = {delta.name: delta for delta in comparison.overall}
    assert healthy.neuron_death is not None and planted.neuron_death is not None
    dormant = overall["neuron_death.dormant_fraction"]
    assert (dormant.old, dormant.new) == (
        healthy.neuron_death.dormant_fraction,
        planted.neuron_death.dormant_fraction,
    )
    assert dormant.delta is not None and dormant.delta > 0
    first = {delta.name: delta for delta in comparison.layers[0].metrics}
    assert first["dormant"].delta is not None and first["dormant"].delta > 0
    assert first["coverage"].delta is not None and first["coverage"].delta < 0
    assert "dormant" in format_comparison(comparison) and "coverage" in format_comparison(comparison)
