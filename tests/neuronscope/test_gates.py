"""Gate expressions: parsing, paths checked against the report schema, evaluation, compare deltas."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from neuronscope.contracts.report import Report
from neuronscope.gates import (
    GatePathError,
    GateSyntaxError,
    check_path_in_schema,
    evaluate_gate,
    parse_gate,
    parse_gates,
    report_data,
)

ReportFactory = Callable[..., Report]


def value_of(expr: str, report: Report, old: Report | None = None) -> float:
    gate = parse_gates([expr], compare=old is not None)[0]
    return evaluate_gate(gate, report_data(report), report_data(old) if old else None).value


@pytest.mark.parametrize(
    ("text", "funcs", "path", "op", "threshold"),
    [
        (
            "pattern_similarity.different_label.mean > 0.9",
            (),
            "pattern_similarity.different_label.mean",
            ">",
            0.9,
        ),
        ("max(layers.dead_fraction)>0.2", ("max",), "layers.dead_fraction", ">", 0.2),
        ("  min( layers.dying_fraction )  <=  -1e-3 ", ("min",), "layers.dying_fraction", "<=", -0.001),
        ("mean(layers.post_activation_var) != .5", ("mean",), "layers.post_activation_var", "!=", 0.5),
        ("delta(max(layers.dying_fraction)) >= 5", ("delta", "max"), "layers.dying_fraction", ">=", 5.0),
        ("max(delta(layers.dead_fraction)) == +1", ("max", "delta"), "layers.dead_fraction", "==", 1.0),
        ("layers.0.dead_fraction < 1", (), "layers.0.dead_fraction", "<", 1.0),
    ],
)
def test_parse(text: str, funcs: tuple[str, ...], path: str, op: str, threshold: float) -> None:
    gate = parse_gate(text)
    assert (gate.funcs, gate.path, gate.op, gate.threshold) == (funcs, path, op, threshold)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty gate"),
        ("layers.dead_fraction", "expected a comparison"),
        ("max(layers.dead_fraction > 0.2", "expected ')'"),
        ("sum(layers.dead_fraction) > 0.2", "unknown function 'sum'"),
        ("max(min(layers.dead_fraction)) > 0.2", "at most one of max/min/mean"),
        ("transition_density.mean > abc", "expected a number"),
        ("transition_density.mean > 1 and 2", "unexpected"),
        ("__import__('os').system('x') > 1", "unexpected"),
        ("transition_density.mean => 1", "unexpected"),
        ("transition_density.mean > 1e999", "finite"),
        ("a; b > 1", "unexpected"),
    ],
)
def test_syntax_errors(text: str, fragment: str) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    assert fragment in info.value.message


def test_delta_only_in_compare() -> None:
    with pytest.raises(GateSyntaxError, match="compare"):
        parse_gates(["delta(transition_density.mean) > 1"])
    assert parse_gates(["delta(transition_density.mean) > 1"], compare=True)


@pytest.mark.parametrize(
    "path",
    [
        "pattern_similarity.different_label.mean",
        "pattern_similarity.random.ps_d.value",
        "pattern_similarity.per_layer.same_label.mean",
        "transition_density.per_pair_kind.same_label.mean",
        "transition_density.samples.td",
        "layers.dead_fraction",
        "layers.3.dying_fraction",
        "dataset.accuracy",
        "timings.total_s",
    ],
)
def test_schema_accepts(path: str) -> None:
    check_path_in_schema(path)


@pytest.mark.parametrize(
    ("path", "fragments"),
    [
        (
            "pattern_similarity.diferent_label.mean",
            ["did you mean 'pattern_similarity.different_label'", "same_label"],
        ),
        ("layers.dead", ["layers has no 'dead'", "dead_fraction", "dying_fraction"]),
        ("pattern_similarity.random", ["object", "pattern_similarity.random.mean"]),
        ("model.format", ["text"]),
        ("transition_density.per_pair_kind.random.mean", ["same_label, different_label"]),
        ("nope", ["valid keys there", "pattern_similarity"]),
    ],
)
def test_schema_rejects_with_neighbours(path: str, fragments: list[str]) -> None:
    with pytest.raises(GatePathError) as info:
        check_path_in_schema(path)
    for fragment in fragments:
        assert fragment in info.value.message


def test_evaluate_scalar_and_aggregates(sample_report: Report) -> None:
    r = sample_report
    assert (
        value_of("pattern_similarity.different_label.mean > 0", r)
        == r.pattern_similarity.different_label.mean
    )
    dead = [x.dead_fraction for x in r.layers]
    assert value_of("max(layers.dead_fraction) > 0", r) == max(dead)
    assert value_of("min(layers.dead_fraction) > 0", r) == min(dead)
    assert value_of("mean(layers.dead_fraction) > 0", r) == pytest.approx(sum(dead) / len(dead))
    assert value_of("layers.5.dying_fraction > 0", r) == r.layers[5].dying_fraction
    curve = r.pattern_similarity.same_label.ps_d.value
    assert value_of("max(pattern_similarity.same_label.ps_d.value) > 0", r) == max(
        v for v in curve if v is not None
    )
    per_layer = [p.random.mean for p in r.pattern_similarity.per_layer]
    assert value_of("max(pattern_similarity.per_layer.random.mean) > 0", r) == max(v for v in per_layer if v)


def test_failed_gate_says_where_and_by_how_much(make_report: ReportFactory) -> None:
    report = make_report(layer_names=["fc1", "fc2", "fc3"], dying=[0.0, 0.75, 0.3], neurons=8)
    gate = parse_gate("max(layers.dying_fraction) > 0.2")
    outcome = evaluate_gate(gate, report_data(report))
    assert outcome.failed and outcome.value == 0.75 and outcome.where == "layers 'fc2'"
    text = outcome.describe()
    assert "FAILED" in text and "0.75" in text and "0.2" in text and "by 0.55" in text and "fc2" in text
    passed = evaluate_gate(parse_gate("max(layers.dying_fraction) > 0.9"), report_data(report))
    assert not passed.failed and passed.describe().startswith("passed")


@pytest.mark.parametrize(
    ("op", "threshold", "failed"),
    [(">", 0.5, True), (">", 0.75, False), (">=", 0.75, True), ("<", 0.75, False), ("<=", 0.75, True),
     ("==", 0.75, True), ("!=", 0.75, False), ("!=", 0.7, True)],
)  # fmt: skip
def test_operators(make_report: ReportFactory, op: str, threshold: float, failed: bool) -> None:
    report = make_report(layer_names=["a", "b"], dying=[0.0, 0.75], neurons=4)
    outcome = evaluate_gate(parse_gate(f"max(layers.dying_fraction) {op} {threshold}"), report_data(report))
    assert outcome.failed is failed


def test_list_without_aggregate_is_an_error(sample_report: Report) -> None:
    with pytest.raises(GatePathError, match=r"wrap it in max\(\)"):
        value_of("layers.dead_fraction > 0.2", sample_report)


def test_null_values(make_report: ReportFactory) -> None:
    report = make_report(with_td=False)
    with pytest.raises(GatePathError, match=r"transition_density is null.*skipped"):
        value_of("transition_density.mean > 3", report)
    data = report_data(report)
    data["pattern_similarity"]["same_label"]["mean"] = None
    with pytest.raises(GatePathError, match="null"):
        evaluate_gate(parse_gate("pattern_similarity.same_label.mean > 0.5"), data)
    # Aggregates skip nulls; all null is an error.
    data["layers"][0]["post_activation_mean"] = None
    assert evaluate_gate(parse_gate("max(layers.post_activation_mean) > 0"), data).value > 0
    for layer in data["layers"]:
        layer["post_activation_mean"] = None
    with pytest.raises(GatePathError, match="all null"):
        evaluate_gate(parse_gate("max(layers.post_activation_mean) > 0"), data)


def test_index_out_of_range(sample_report: Report) -> None:
    with pytest.raises(GatePathError, match="out of range"):
        value_of("layers.99.dead_fraction > 0", sample_report)


def test_deltas(make_report: ReportFactory) -> None:
    old = make_report(layer_names=["a", "b", "c"], dying=[0.0, 0.25, 0.5], neurons=8)
    new = make_report(layer_names=["b", "c", "d"], dying=[0.5, 0.5, 1.0], neurons=8, seed=1)
    assert value_of("delta(max(layers.dying_fraction)) > 0", new, old) == pytest.approx(0.5)
    # Per-layer deltas match layers by name: b +0.25, c 0; a and d are in one report only.
    outcome = evaluate_gate(
        parse_gates(["max(delta(layers.dying_fraction)) > 0.2"], compare=True)[0],
        report_data(new),
        report_data(old),
    )
    assert outcome.value == pytest.approx(0.25) and outcome.where == "layers 'b'" and outcome.failed
    expected = new.pattern_similarity.random.mean - old.pattern_similarity.random.mean  # type: ignore[operator]
    assert value_of("delta(pattern_similarity.random.mean) > 0", new, old) == pytest.approx(expected)
    # Without delta, a compare gate reads the new report.
    assert value_of("max(layers.dying_fraction) > 0", new, old) == 1.0


def test_delta_without_common_elements(make_report: ReportFactory) -> None:
    old = make_report(layer_names=["a"], dying=[0.1])
    new = make_report(layer_names=["z"], dying=[0.1])
    with pytest.raises(GatePathError, match="both reports"):
        value_of("max(delta(layers.dying_fraction)) > 0", new, old)
