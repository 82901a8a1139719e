"""The report's dead / dying index lists are capped over all layers, not only per layer: a real
analysis of a model whose every neuron is dead in every layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig, Report
from neuronscope.contracts.report import MAX_LISTED_NEURONS, MAX_STUCK_NEURONS
from worker.engine import analyze

LAYERS = 30
SIDE = 60  # 3,600 neurons per layer: 108,000 dead (and as many dying) neurons in all


def dead_conv_stack(path: Path) -> Path:
    """``LAYERS`` 1×1 convolutions with a bias of -1e4, each followed by a ReLU that never opens."""
    blocks: list[nn.Module] = []
    for _ in range(LAYERS):
        conv = nn.Conv2d(1, 1, 1)
        assert conv.bias is not None
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.fill_(-1e4)
        blocks += [conv, nn.ReLU()]
    model = nn.Sequential(*blocks).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIDE, SIDE),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def capped_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("caps")
    rng = np.random.default_rng(0)
    np.savez(
        out / "d.npz",
        x=rng.normal(size=(4, 1, SIDE, SIDE)).astype(np.float32),
        y=np.array([0, 1, 0, 1]),
    )
    config = AnalysisConfig.model_validate(
        {"max_neuron_indices": 100_000, "transition_density": None, "pairs": {"count": 2}}
    )
    return analyze(dead_conv_stack(out / "m.onnx"), out / "d.npz", config)


def test_lists_are_capped_across_layers_and_say_what_they_left_out(capped_report: Report) -> None:
    layers = capped_report.layers
    assert len(layers) == LAYERS
    listed = sum(len(x.dead_neurons) + len(x.dying_neurons) for x in layers)
    assert listed == MAX_LISTED_NEURONS  # 216,000 wanted (3,600 × 2 lists × 30 layers)
    for layer in layers:
        # Counts and fractions stay exact; the lists are the lowest indices, a fair share each.
        assert layer.dead_count == layer.dying_count == SIDE * SIDE
        assert layer.dead_fraction == layer.dying_fraction == 1.0
        assert layer.dead_neurons == list(range(len(layer.dead_neurons)))
        assert len(layer.dead_neurons) in (MAX_LISTED_NEURONS // 60, MAX_LISTED_NEURONS // 60 + 1)
        assert layer.dead_neurons_omitted == layer.dead_count - len(layer.dead_neurons)
        assert layer.dying_neurons_omitted == layer.dying_count - len(layer.dying_neurons)
    assert capped_report.neurons_omitted == 2 * LAYERS * SIDE * SIDE - MAX_LISTED_NEURONS


def test_the_capped_report_is_small_and_valid(capped_report: Report) -> None:
    text = capped_report.to_json()
    assert len(text) < 2_000_000  # was 35 MB for 30 layers × 100 k dead neurons
    assert Report.model_validate_json(text) == capped_report


def test_the_per_layer_cap_alone_also_says_what_it_left_out(tmp_path: Path) -> None:
    # The per-layer cap alone: 10 per list and layer, 600 in all, under the report-wide cap.
    config = AnalysisConfig.model_validate(
        {"max_neuron_indices": 10, "transition_density": None, "pairs": {"count": 2}}
    )
    np.savez(tmp_path / "d.npz", x=np.ones((3, 1, SIDE, SIDE), np.float32))
    report = analyze(dead_conv_stack(tmp_path / "m.onnx"), tmp_path / "d.npz", config)
    assert all(x.dead_neurons == list(range(10)) for x in report.layers)
    assert all(x.dead_neurons_omitted == SIDE * SIDE - 10 for x in report.layers)


def test_stuck_neurons_are_capped_across_layers(capped_report: Report) -> None:
    stuck = [layer.death.stuck_neurons for layer in capped_report.layers if layer.death is not None]
    assert len(stuck) == LAYERS and sum(len(s) for s in stuck) == MAX_STUCK_NEURONS
    for layer in capped_report.layers:
        assert layer.death is not None
        listed = {*layer.dead_neurons, *layer.dying_neurons}
        shown = [n.neuron for n in layer.death.stuck_neurons]
        assert shown == sorted(listed)[: len(shown)]
        assert layer.death.stuck_neurons_omitted == len(listed) - len(shown)
        # A 1×1 conv with bias -1e4 on N(0, 1) inputs: about 1e4 below ReLU's breakpoint.
        assert all(
            n.dead and n.region == 0 and n.breakpoint_distance > 9_000 for n in layer.death.stuck_neurons
        )
        assert layer.death.units == 1 and layer.death.dormant[0].count == 1
