"""The whole engine against an independent brute-force reference and against invariants.

The reference captures pre-activations with forward hooks on the original PyTorch module (not
through the engine's front ends) and computes every metric with per-pair numpy loops.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig, Report
from worker.engine import AnalysisError, analyze

GAMMA = {nn.ReLU: [0.0], nn.Tanh: [-0.5, 0.0, 0.5], nn.Sigmoid: [-0.5, 0.0, 0.5]}


def make_mlp(seed: int, widths: tuple[int, ...] = (6, 12, 10, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(widths[0], widths[1]),
        nn.ReLU(),
        nn.Linear(widths[1], widths[2]),
        nn.Tanh(),
        nn.Linear(widths[2], widths[3]),
    ).eval()


def export_onnx(model: nn.Module, features: int, path: Path) -> Path:
    torch.onnx.export(
        model,
        (torch.zeros(1, features),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return path


def export_torchscript(model: nn.Module, path: Path) -> Path:
    torch.jit.script(model).save(str(path))
    return path


def write_dataset(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    arrays = {"x": x.astype(np.float32)}
    if y is not None:
        arrays["y"] = y.astype(np.int64)
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- brute-force reference


def reference_patterns(model: nn.Sequential, x: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Region indices ``[N, M]`` by explicit loops over neurons, layer sizes and outputs ``[N, D]``."""
    captured: list[np.ndarray] = []
    gammas: list[list[float]] = []
    hooks = []
    for module in model:
        if type(module) in GAMMA:
            gammas.append(GAMMA[type(module)])
            hooks.append(
                module.register_forward_hook(lambda m, inp, out: captured.append(inp[0].numpy().copy()))
            )
    try:
        with torch.no_grad():
            outputs = model(torch.from_numpy(x.astype(np.float32))).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    columns = []
    for values, gamma in zip(captured, gammas, strict=True):
        regions = np.zeros(values.shape, dtype=np.int64)
        for n in range(values.shape[0]):
            for k in range(values.shape[1]):
                regions[n, k] = sum(1 for g in gamma if g < values[n, k])
        columns.append(regions)
    return np.concatenate(columns, axis=1), [c.shape[1] for c in columns], outputs


def reference_ps(patterns: np.ndarray, i: int, j: int) -> float:
    same = 0
    for k in range(patterns.shape[1]):
        same += int(patterns[i, k] == patterns[j, k])
    return same / patterns.shape[1]


def reference_td(model: nn.Sequential, x1: np.ndarray, x2: np.ndarray, points: int) -> int:
    path = np.stack([x1 + (i / (points - 1)) * (x2 - x1) for i in range(points)])
    path[0], path[-1] = x1, x2
    patterns, _, _ = reference_patterns(model, path)
    return sum(int(not np.array_equal(patterns[i], patterns[i + 1])) for i in range(points - 1))


@pytest.fixture(scope="module")
def mlp_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("mlp")
    model = make_mlp(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    return {
        "model": model,
        "x": x,
        "y": y,
        "onnx": export_onnx(model, 6, tmp / "mlp.onnx"),
        "torchscript": export_torchscript(model, tmp / "mlp.pt"),
        "dataset": write_dataset(tmp / "data.npz", x, y),
    }


CONFIG = AnalysisConfig.model_validate(
    {"pairs": "all", "transition_density": {"pairs": {"count": 6, "seed": 1}, "points": 40}, "batch_size": 7}
)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_metric_matches_the_brute_force_reference(mlp_case: dict[str, object], fmt: str) -> None:
    model, x, y = mlp_case["model"], mlp_case["x"], mlp_case["y"]
    assert isinstance(model, nn.Sequential) and isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    report = analyze(mlp_case[fmt], mlp_case["dataset"], CONFIG)  # type: ignore[arg-type]
    patterns, sizes, outputs = reference_patterns(model, x)
    n = x.shape[0]

    pairs = list(itertools.combinations(range(n), 2))
    ps = {p: reference_ps(patterns, *p) for p in pairs}
    same = [p for p in pairs if y[p[0]] == y[p[1]]]
    different = [p for p in pairs if y[p[0]] != y[p[1]]]
    for kind, chosen in (("random", pairs), ("same_label", same), ("different_label", different)):
        stats = getattr(report.pattern_similarity, kind)
        values = np.array([ps[p] for p in chosen])
        assert stats.pairs == len(chosen)
        assert stats.mean == pytest.approx(values.mean(), abs=1e-12)
        assert stats.std == pytest.approx(values.std(), abs=1e-12)
        for lam, value in zip(stats.ps_d.lambda_, stats.ps_d.value, strict=True):
            assert value == pytest.approx(float(np.mean(values > lam + 1e-12)), abs=1e-12), (kind, lam)

    offsets = np.cumsum([0, *sizes])
    for index, layer in enumerate(report.pattern_similarity.per_layer):
        block = patterns[:, offsets[index] : offsets[index + 1]]
        expected = np.mean([reference_ps(block, *p) for p in pairs])
        assert layer.random.mean == pytest.approx(expected, abs=1e-12)

    for index, health in enumerate(report.layers):
        block = patterns[:, offsets[index] : offsets[index + 1]]
        dominant = [np.bincount(block[:, k]).max() / n for k in range(block.shape[1])]
        assert health.dead_count == sum(1 for d in dominant if d == 1.0)
        assert health.dying_count == sum(1 for d in dominant if d >= 0.9)

    distances = {p: float(np.linalg.norm(outputs[p[0]] - outputs[p[1]])) for p in pairs}
    assert report.prediction_distance.random.mean == pytest.approx(
        np.mean(list(distances.values())), rel=1e-5
    )
    assert report.prediction_distance.same_label.mean == pytest.approx(
        np.mean([distances[p] for p in same]), rel=1e-5
    )

    td = report.transition_density
    assert td is not None and td.pairs == 6 and td.points == 40
    for row in td.samples:
        assert row.td == reference_td(model, x[row.i], x[row.j], 40)
        assert row.ps == pytest.approx(ps[(min(row.i, row.j), max(row.i, row.j))], abs=1e-12)
    assert td.mean == pytest.approx(np.mean([row.td for row in td.samples]))
    assert report.dataset.accuracy == pytest.approx(float(np.mean(outputs.argmax(1) == y)))


def test_onnx_and_torchscript_exports_give_the_same_report(mlp_case: dict[str, object]) -> None:
    reports = [analyze(mlp_case[f], mlp_case["dataset"], CONFIG) for f in ("onnx", "torchscript")]  # type: ignore[arg-type]
    onnx_report, script_report = reports
    assert onnx_report.model.format == "onnx" and script_report.model.format == "torchscript"
    for kind in ("random", "same_label", "different_label"):
        a = getattr(onnx_report.pattern_similarity, kind).mean
        b = getattr(script_report.pattern_similarity, kind).mean
        assert abs(a - b) < 1e-3
    assert [layer.op_type for layer in onnx_report.model.layers] == ["relu", "tanh"]
    assert [layer.op_type for layer in script_report.model.layers] == ["relu", "tanh"]
    assert onnx_report.transition_density is not None and script_report.transition_density is not None
    assert onnx_report.transition_density.mean == script_report.transition_density.mean


def test_permuting_hidden_units_leaves_every_metric_unchanged(
    mlp_case: dict[str, object], tmp_path: Path
) -> None:
    model = mlp_case["model"]
    assert isinstance(model, nn.Sequential)
    permuted = make_mlp(0)
    permutation = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        permuted[0].weight.copy_(model[0].weight[permutation])
        permuted[0].bias.copy_(model[0].bias[permutation])
        permuted[2].weight.copy_(model[2].weight[:, permutation])
    original = analyze(mlp_case["onnx"], mlp_case["dataset"], CONFIG)  # type: ignore[arg-type]
    shuffled = analyze(export_onnx(permuted, 6, tmp_path / "p.onnx"), mlp_case["dataset"], CONFIG)  # type: ignore[arg-type]
    for kind in ("random", "same_label", "different_label"):
        assert getattr(shuffled.pattern_similarity, kind).mean == pytest.approx(
            getattr(original.pattern_similarity, kind).mean, abs=1e-12
        )
    assert shuffled.transition_density is not None and original.transition_density is not None
    assert [r.td for r in shuffled.transition_density.samples] == [
        r.td for r in original.transition_density.samples
    ]
    for a, b in zip(original.layers, shuffled.layers, strict=True):
        assert (a.dead_count, a.dying_count) == (b.dead_count, b.dying_count)
        assert a.post_activation_mean == pytest.approx(b.post_activation_mean, rel=1e-6)


def test_planted_dead_neurons_are_found_exactly(mlp_case: dict[str, object], tmp_path: Path) -> None:
    model = make_mlp(0)
    planted = [1, 4, 9]
    with torch.no_grad():
        model[0].bias[planted] = -1e4
    report = analyze(export_onnx(model, 6, tmp_path / "dead.onnx"), mlp_case["dataset"], CONFIG)  # type: ignore[arg-type]
    relu = report.layers[0]
    assert relu.dead_neurons == planted
    assert relu.dead_count == 3 and relu.dead_fraction == pytest.approx(3 / 12)
    assert set(planted) <= set(relu.dying_neurons)


def test_identical_endpoints_have_no_transitions_and_full_similarity(mlp_case: dict[str, object]) -> None:
    x = mlp_case["x"]
    assert isinstance(x, np.ndarray)
    twin = np.concatenate([x[:4], x[:4]])
    path = Path(str(mlp_case["dataset"])).with_name("twins.npz")
    write_dataset(path, twin, np.array([0, 1, 2, 0, 0, 1, 2, 0]))
    config = AnalysisConfig.model_validate(
        {"pairs": [[0, 4], [4, 0], [1, 5]], "transition_density": {"pairs": [[2, 6]], "points": 16}}
    )
    report = analyze(mlp_case["onnx"], path, config)  # type: ignore[arg-type]
    assert report.pattern_similarity.random.mean == 1.0
    assert report.pattern_similarity.random.std == 0.0
    assert report.transition_density is not None
    assert report.transition_density.samples[0].td == 0
    assert report.transition_density.samples[0].neuron_changes == 0


def test_report_json_round_trips_without_invalid_tokens(mlp_case: dict[str, object]) -> None:
    config = AnalysisConfig.model_validate({"pairs": [[0, 1]], "transition_density": None})
    x = mlp_case["x"]
    assert isinstance(x, np.ndarray)
    path = Path(str(mlp_case["dataset"])).with_name("one_label.npz")
    write_dataset(path, x, np.zeros(x.shape[0], dtype=np.int64))
    report = analyze(mlp_case["onnx"], path, config)  # type: ignore[arg-type]
    text = report.to_json()
    assert "NaN" not in text and "Infinity" not in text
    again = Report.model_validate_json(text)
    assert again.pattern_similarity.different_label.mean is None
    assert again.pattern_similarity.different_label.pairs == 0
    assert again.transition_density is None


def test_predicted_labels_are_used_and_reported_without_dataset_labels(
    mlp_case: dict[str, object], tmp_path: Path
) -> None:
    model, x = mlp_case["model"], mlp_case["x"]
    assert isinstance(model, nn.Sequential) and isinstance(x, np.ndarray)
    report = analyze(mlp_case["onnx"], write_dataset(tmp_path / "x.npz", x), CONFIG)  # type: ignore[arg-type]
    assert report.dataset.labels_source == "predicted"
    assert report.dataset.accuracy is None
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    same = sum(1 for i, j in itertools.combinations(range(len(x)), 2) if predicted[i] == predicted[j])
    assert report.pattern_similarity.same_label.pairs == same


def test_post_activation_space_and_breakpoint_overrides(mlp_case: dict[str, object]) -> None:
    config = AnalysisConfig.model_validate(
        {"space": "post", "breakpoints": {"tanh": [0.0]}, "transition_density": None, "pairs": {"count": 20}}
    )
    report = analyze(mlp_case["onnx"], mlp_case["dataset"], config)  # type: ignore[arg-type]
    assert [layer.breakpoints for layer in report.model.layers] == [[0.0], [0.0]]
    assert report.pattern_similarity.pair_selection == "sample"
    assert report.pattern_similarity.random.pairs == 20
    assert report.provenance.config == config


# ---------------------------------------------------------------- errors a person can act on


def test_unknown_layer_name_is_a_clear_error(mlp_case: dict[str, object]) -> None:
    with pytest.raises(AnalysisError) as error:
        analyze(mlp_case["onnx"], mlp_case["dataset"], AnalysisConfig(layers=["no_such_layer"]))  # type: ignore[arg-type]
    assert error.value.code == "unknown_layer"
    assert "no_such_layer" in error.value.message


def test_unknown_breakpoint_key_is_a_clear_error(mlp_case: dict[str, object]) -> None:
    config = AnalysisConfig.model_validate({"breakpoints": {"reluu": [0.0]}})
    with pytest.raises(AnalysisError) as error:
        analyze(mlp_case["onnx"], mlp_case["dataset"], config)  # type: ignore[arg-type]
    assert error.value.code == "unknown_layer" and "reluu" in error.value.message


def test_dataset_shape_not_matching_the_model_input(mlp_case: dict[str, object], tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "wide.npz", np.zeros((5, 7), np.float32))
    with pytest.raises(AnalysisError) as error:
        analyze(mlp_case["onnx"], data, CONFIG)  # type: ignore[arg-type]
    assert error.value.code == "dataset_shape_mismatch"
    assert "6" in error.value.message and "7" in error.value.message


def test_labels_of_wrong_length(mlp_case: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "bad_labels.npz"
    np.savez(path, x=np.zeros((5, 6), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises((AnalysisError,)) as error:
        analyze(mlp_case["onnx"], path, CONFIG)  # type: ignore[arg-type]
    assert error.value.code in {"labels_invalid", "dataset_labels_invalid"}


def test_a_model_without_activations(tmp_path: Path, mlp_case: dict[str, object]) -> None:
    linear = export_onnx(nn.Sequential(nn.Linear(6, 3)).eval(), 6, tmp_path / "linear.onnx")
    with pytest.raises(AnalysisError) as error:
        analyze(linear, mlp_case["dataset"], CONFIG)  # type: ignore[arg-type]
    assert error.value.code == "no_activation_layers"


def test_out_of_range_pairs(mlp_case: dict[str, object]) -> None:
    config = AnalysisConfig.model_validate({"pairs": [[0, 99]], "transition_density": None})
    with pytest.raises(AnalysisError) as error:
        analyze(mlp_case["onnx"], mlp_case["dataset"], config)  # type: ignore[arg-type]
    assert error.value.code == "pairs_invalid" and "99" in error.value.message


def test_progress_reports_every_stage_and_can_cancel(mlp_case: dict[str, object]) -> None:
    seen: list[tuple[str, float]] = []
    analyze(mlp_case["onnx"], mlp_case["dataset"], CONFIG, progress=lambda s, f: seen.append((s, f)))  # type: ignore[arg-type]
    stages = [s for s, _ in seen]
    for stage in ("load", "capture", "pattern_similarity", "transition_density"):
        assert stage in stages
    assert all(0.0 <= f <= 1.0 and math.isfinite(f) for _, f in seen)

    class Cancelled(Exception):
        pass

    def cancel(stage: str, fraction: float) -> None:
        if stage == "capture":
            raise Cancelled

    with pytest.raises(Cancelled):
        analyze(mlp_case["onnx"], mlp_case["dataset"], CONFIG, progress=cancel)  # type: ignore[arg-type]
