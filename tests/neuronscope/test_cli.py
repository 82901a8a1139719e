"""The command line: exit codes, one-line errors, reports written, gates, progress output.

Most tests call ``main(argv)`` in-process; the engine is replaced where a test is about the CLI's
handling of its result, and run for real in the end-to-end tests (the example model).
"""

from __future__ import annotations

import functools
import io
import json
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ns_testlib import FakeApi, LiveService, play_worker

import neuronscope.client as client_module
from neuronscope import cli, progress
from neuronscope.cli import (
    EXIT_ANALYSIS_FAILED,
    EXIT_CANCELLED,
    EXIT_CONNECTION,
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    main,
)
from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.progress import ProgressBar

ROOT = Path(__file__).resolve().parents[2]
ReportFactory = Callable[..., Report]
SMALL_CONFIG = {"transition_density": {"pairs": {"count": 4}, "points": 16}}


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    model, dataset = tmp_path / "model.onnx", tmp_path / "data.npz"
    model.write_bytes(b"not really onnx")
    dataset.write_bytes(b"not really npz")
    return model, dataset


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, sample_report: Report) -> dict[str, Any]:
    """Replaces ``worker.engine.analyze``; ``state['result']`` is returned or raised."""
    import worker.engine

    state: dict[str, Any] = {"result": sample_report, "calls": []}

    def fake_analyze(
        model: Path,
        dataset: Path,
        config: AnalysisConfig,
        *,
        progress: Any = None,
        trusted_model: bool = False,
    ) -> Report:
        assert trusted_model, "the local CLI analyses the user's own files: external ONNX data is allowed"
        state["calls"].append((model, dataset, config))
        if progress is not None:
            progress("capture", 0.5)
        if isinstance(state["result"], BaseException):
            raise state["result"]
        result: Report = state["result"]
        return result

    monkeypatch.setattr(worker.engine, "analyze", fake_analyze)
    return state


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_ANALYSIS_FAILED, EXIT_CONNECTION, EXIT_CANCELLED]
    assert codes == [0, 1, 2, 3, 4, 5]
    docstring = cli.__doc__ or ""
    docs = (ROOT / "docs" / "cli.md").read_text()
    for name in ("EXIT_OK", "EXIT_GATE_FAILED", "EXIT_USAGE", "EXIT_ANALYSIS_FAILED", "EXIT_CONNECTION"):
        code = getattr(cli, name)
        assert re.search(rf"^\s*{code}\s+{name}\b", docstring, re.M), name
        assert re.search(rf"\|\s*{code}\s*\|\s*`{name}`", docs), name


def test_cli_import_does_not_load_torch() -> None:
    code = "import sys, neuronscope.cli; sys.exit(int(bool({'torch', 'onnxruntime'} & set(sys.modules))))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "Exit codes" in capsys.readouterr().out
    assert main([]) == EXIT_USAGE
    assert main(["analyze"]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE


# ---------------------------------------------------------------------------------------------
# analyze


def test_analyze_writes_reports_and_summary(
    inputs: tuple[Path, Path], tmp_path: Path, engine: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps(SMALL_CONFIG))
    out, html = tmp_path / "out" / "r.json", tmp_path / "r.html"
    code = main(
        ["analyze", *map(str, inputs), "--config", str(config), "--out", str(out), "--html", str(html)]
    )
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert Report.model_validate_json(out.read_text()) == engine["result"]
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert "Verdict:" in captured.out and f"JSON report: {out}" in captured.out
    assert engine["calls"][0][2].transition_density.points == 16
    assert captured.err.strip() == "capture (50%)"  # not a terminal: one line per stage, no bar


def test_analyze_default_out_and_quiet(
    inputs: tuple[Path, Path], tmp_path: Path, engine: dict[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", *map(str, inputs), "--quiet"]) == EXIT_OK
    assert (tmp_path / "model.report.json").exists()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_gates_fail_with_exit_1_and_say_by_how_much(
    inputs: tuple[Path, Path], tmp_path: Path, engine: dict[str, Any], make_report: ReportFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    engine["result"] = make_report(layer_names=["fc1", "fc2"], dying=[0.0, 0.75], neurons=8)
    out = tmp_path / "r.json"
    code = main(
        ["analyze", *map(str, inputs), "--out", str(out), "--fail-if", "max(layers.dying_fraction) > 0.5",
         "--fail-if", "pattern_similarity.different_label.mean > 0.99"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == EXIT_GATE_FAILED
    assert out.exists()  # the report is written even when a gate fails
    assert "FAILED gate `max(layers.dying_fraction) > 0.5`: value 0.75 (at layers 'fc2')" in captured.err
    assert "by 0.25" in captured.err and "1 of 2 gates failed" in captured.err
    assert "passed gate `pattern_similarity.different_label.mean > 0.99`" in captured.out


@pytest.mark.parametrize(
    ("config_text", "fragment"),
    [
        ('{"pairs": {"count": 0}}', "pairs"),
        ('{"bogus": 1}', "bogus: unknown key"),
        ('{"pairs": ', "not valid JSON"),
        ('{"dying_threshold": 2}', "dying_threshold"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    inputs: tuple[Path, Path], tmp_path: Path, engine: dict[str, Any], capsys: pytest.CaptureFixture[str],
    config_text: str, fragment: str,
) -> None:  # fmt: skip
    config = tmp_path / "c.json"
    config.write_text(config_text)
    assert main(["analyze", *map(str, inputs), "--config", str(config)]) == EXIT_USAGE
    line = one_line_error(capsys.readouterr().err)
    assert f"config file {config} is invalid" in line and fragment in line
    assert engine["calls"] == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--config", "/nonexistent/c.json"], "cannot read config file"),
        (["--fail-if", "max(layers.dead) > 0.1"], "layers has no 'dead'"),
        (["--fail-if", "max(layers.dead_fraction) >> 0.1"], "expected a number after '>'"),
        (["--fail-if", "delta(transition_density.mean) > 1"], "compare"),
    ],
)
def test_usage_errors_before_running(
    inputs: tuple[Path, Path], engine: dict[str, Any], capsys: pytest.CaptureFixture[str],
    args: list[str], fragment: str,
) -> None:  # fmt: skip
    assert main(["analyze", *map(str, inputs), *args]) == EXIT_USAGE
    assert fragment in one_line_error(capsys.readouterr().err)
    assert engine["calls"] == []


def test_missing_model(tmp_path: Path, engine: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "nope.onnx"), str(tmp_path / "d.npz")]) == EXIT_USAGE
    assert "does not exist" in one_line_error(capsys.readouterr().err)


def test_null_gate_value_is_a_usage_error(
    inputs: tuple[Path, Path], tmp_path: Path, engine: dict[str, Any], make_report: ReportFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    engine["result"] = make_report(with_td=False)
    code = main(["analyze", *map(str, inputs), "--out", str(tmp_path / "r.json"), "-q",
                 "--fail-if", "transition_density.mean > 10"])  # fmt: skip
    assert code == EXIT_USAGE
    assert "transition_density is null" in one_line_error(capsys.readouterr().err)


def test_analysis_errors(
    inputs: tuple[Path, Path], engine: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.engine.errors import AnalysisError

    engine["result"] = AnalysisError("expected x of shape [N, 64], got [N, 7]", code="dataset_shape_mismatch")
    assert main(["analyze", *map(str, inputs), "-q"]) == EXIT_ANALYSIS_FAILED
    line = one_line_error(capsys.readouterr().err)
    assert line == (
        "neuronscope analyze: analysis failed (dataset_shape_mismatch): "
        "expected x of shape [N, 64], got [N, 7]"
    )
    engine["result"] = AnalysisError("stopped", code="cancelled")
    assert main(["analyze", *map(str, inputs), "-q"]) == EXIT_CANCELLED
    assert "analysis failed (cancelled): stopped" in one_line_error(capsys.readouterr().err)
    engine["result"] = RuntimeError("boom")
    assert main(["analyze", *map(str, inputs), "-q"]) == EXIT_ANALYSIS_FAILED
    assert "internal error: RuntimeError: boom" in one_line_error(capsys.readouterr().err)


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: tqdm's bar, drawn at once for a new stage and at 100%, otherwise at most
    every 0.1 s, erased on close."""
    import tqdm

    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    monkeypatch.setattr(progress, "time", lambda: clock[0])

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(stream)
    bar.update("capture", 0.5)
    bar.update("capture", 0.6)  # within 0.1 s: not drawn
    clock[0] += 0.2
    bar.update("capture", 0.7)
    bar.update("pattern_similarity", 0.25)  # a new stage: drawn at once
    bar.update("pattern_similarity", 1.0)  # done: drawn at once
    text = stream.getvalue()
    frames = [frame.rstrip() for frame in text.split("\r") if frame.strip()]
    assert [frame.split("|")[0].strip() + " " + frame.split("|")[-1].strip() for frame in frames] == [
        "50% capture",
        "70% capture",
        "25% pattern_similarity",
        "100% pattern_similarity",
    ]
    assert "\n" not in text and "\x1b[2K" not in text
    bar.close()
    assert stream.getvalue()[len(text) :].strip() == "", "close erases the bar"


def test_progress_bar_on_a_terminal_that_reports_no_size() -> None:
    """A real pseudo-terminal never sized (0 × 0, as under ``script`` or some CI runners): the bar
    is still drawn, at 80 columns."""
    import os
    import pty

    master, replica = pty.openpty()
    try:
        assert os.get_terminal_size(replica) == (0, 0)
        with open(replica, "w", encoding="utf-8", closefd=False) as stream:
            bar = ProgressBar(stream)
            bar.update("capture", 0.5)
            bar.update("transition_density", 1.0)
            bar.close()
        drawn = b""
        while select.select([master], [], [], 0.5)[0]:
            drawn += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(replica)
    frames = [frame for frame in drawn.decode().split("\r") if frame.strip()]
    assert [frame.split("|")[0].strip() + " " + frame.split("|")[-1].strip() for frame in frames] == [
        "50% capture",
        "100% transition_density",
    ]
    assert all(len(frame) <= 80 for frame in frames), frames


def test_progress_off_a_terminal_is_one_line_per_stage() -> None:
    """A pipe or a CI log gets plain lines, no carriage returns or escape sequences; --quiet nothing."""
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for stage, fraction in [("load", 0.0), ("capture", 0.5), ("capture", 0.9), ("transition_density", 1.0)]:
        bar.update(stage, fraction)
    bar.close()
    assert stream.getvalue() == "load (0%)\ncapture (50%)\ntransition_density (100%)\n"
    quiet = io.StringIO()
    ProgressBar(quiet, enabled=False).update("capture", 0.5)
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# compare and check


def test_compare_and_delta_gates(
    tmp_path: Path, make_report: ReportFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(make_report(layer_names=["a", "b"], dying=[0.0, 0.25], neurons=8).to_json())
    new.write_text(make_report(layer_names=["a", "b"], dying=[0.0, 0.5], neurons=8).to_json())
    assert main(["compare", str(old), str(new)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "max(layers.dying_fraction)" in out and "+25.0 pts" in out
    code = main(["compare", str(old), str(new), "--fail-if", "max(delta(layers.dying_fraction)) > 0.1"])
    captured = capsys.readouterr()
    assert code == EXIT_GATE_FAILED
    assert "FAILED gate `max(delta(layers.dying_fraction)) > 0.1`: value 0.25 (at layers 'b')" in captured.err
    assert (
        main(["compare", str(old), str(new), "-q", "--fail-if", "delta(max(layers.dying_fraction)) > 0.3"])
        == 0
    )


def test_compare_bad_report(
    tmp_path: Path, sample_report: Report, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(sample_report.to_json())
    bad.write_text('{"schema_version": "1.0"}')
    assert main(["compare", str(good), str(bad)]) == EXIT_USAGE
    assert f"report {bad} is invalid" in one_line_error(capsys.readouterr().err)
    assert main(["compare", str(good), str(tmp_path / "missing.json")]) == EXIT_USAGE


def test_check(tmp_path: Path, sample_report: Report, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(sample_report.to_json())
    assert main(["check", str(path), "--fail-if", "mean(layers.dead_fraction) > 0.5"]) == EXIT_OK
    assert main(["check", str(path), "--fail-if", "mean(layers.dead_fraction) < 0.5"]) == EXIT_GATE_FAILED
    assert main(["check", str(path)]) == EXIT_USAGE


# ---------------------------------------------------------------------------------------------
# submit (against the in-memory fake of the API)


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch, fake_api: FakeApi) -> FakeApi:
    monkeypatch.setattr(
        client_module, "Client", functools.partial(client_module.Client, transport=fake_api.transport())
    )
    monkeypatch.delenv("NEURONSCOPE_API_KEY", raising=False)
    return fake_api


def submit(*args: str) -> int:
    return main(["submit", *args, "--server", "http://neuronscope.test", "--poll-interval", "0.001"])


def test_submit_wait_writes_reports(
    inputs: tuple[Path, Path], tmp_path: Path, use_fake: FakeApi, sample_report: Report,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("NEURONSCOPE_API_KEY", "from-env")
    use_fake.api_key = "from-env"
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    code = submit(*map(str, inputs), "--out", str(out), "--html", str(html),
                  "--fail-if", "max(layers.dead_fraction) > 0.9")  # fmt: skip
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert Report.model_validate_json(out.read_text()) == sample_report
    assert "<svg" in html.read_text()
    assert "Verdict:" in captured.out and "passed gate" in captured.out
    assert "job job1 submitted" in captured.err and "pattern_similarity (50%)" in captured.err


def test_submit_without_wait_prints_the_job(
    inputs: tuple[Path, Path], use_fake: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(*map(str, inputs)) == EXIT_OK
    out = capsys.readouterr().out
    assert "job job1 queued" in out and "http://neuronscope.test/v1/jobs/job1" in out
    assert use_fake.polls == 0


@pytest.mark.parametrize(
    ("script", "error", "exit_code", "fragment"),
    [
        (["running", "failed"], {"code": "model_invalid", "message": "not an ONNX file"},
         EXIT_ANALYSIS_FAILED, "job job1 failed (model_invalid): not an ONNX file"),
        (["running", "cancelled"], {"code": "cancelled", "message": "cancelled by a user"}, EXIT_CANCELLED,
         "job job1 was cancelled"),
    ],
)  # fmt: skip
def test_submit_job_failures(
    inputs: tuple[Path, Path], use_fake: FakeApi, capsys: pytest.CaptureFixture[str],
    script: list[str], error: dict[str, str], exit_code: int, fragment: str,
) -> None:  # fmt: skip
    use_fake.script, use_fake.error = script, error
    assert submit(*map(str, inputs), "--wait") == exit_code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert fragment in err.strip().splitlines()[-1]


def test_submit_timeout_cancels(
    inputs: tuple[Path, Path], use_fake: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    use_fake.script = ["running"]
    assert submit(*map(str, inputs), "--wait", "--timeout", "0.05", "-q") == EXIT_CANCELLED
    assert use_fake.cancelled
    assert "did not finish within 0.05 s; it was cancelled" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("status", "body", "exit_code"),
    [
        (422, {"error": "invalid_config", "detail": "config: pairs: bad"}, EXIT_USAGE),
        (401, {"error": "unauthorized", "detail": "missing API key"}, EXIT_CONNECTION),
        (503, {"error": "service_unavailable", "detail": "Redis down"}, EXIT_CONNECTION),
    ],
)
def test_submit_server_errors(
    inputs: tuple[Path, Path], use_fake: FakeApi, capsys: pytest.CaptureFixture[str],
    status: int, body: dict[str, str], exit_code: int,
) -> None:  # fmt: skip
    use_fake.analyze_error = (status, body)
    assert submit(*map(str, inputs), "--wait") == exit_code
    line = one_line_error(capsys.readouterr().err)
    assert body["error"] in line and body["detail"] in line


def test_submit_connection_refused(inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["submit", *map(str, inputs), "--server", f"http://127.0.0.1:{port}", "--wait"])
    assert code == EXIT_CONNECTION
    assert "connection failed: cannot reach the server" in one_line_error(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# End to end: the real engine on the example model; the real API app


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from neuronscope.examples import make_example

    return make_example(tmp_path_factory.mktemp("example"), epochs=5)


@pytest.mark.slow
def test_analyze_end_to_end_on_the_example(example: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps(SMALL_CONFIG))
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "neuronscope.cli", "analyze", str(example.model), str(example.dataset),
         "--config", str(config), "--out", str(out), "--html", str(html),
         "--fail-if", "max(layers.dead_fraction) > 1.5", "--fail-if", "transition_density.mean < 0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    report = Report.model_validate_json(out.read_text())
    assert report.model.format == "onnx" and len(report.layers) == 3
    assert report.transition_density is not None and report.transition_density.points == 16
    assert report.dataset.samples == 360 and report.dataset.labels_source == "dataset"
    assert "Verdict:" in proc.stdout and "passed gate" in proc.stdout
    assert "<svg" in html.read_text()
    # A gate that must fail on the same report, through `check`:
    assert (
        main(["check", str(out), "-q", "--fail-if", "mean(layers.dying_fraction) >= 0"]) == EXIT_GATE_FAILED
    )


@pytest.mark.integration
def test_submit_against_the_real_api(
    live_service: LiveService, tiny_model: Any, sample_report: Report, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def worker_when_queued() -> None:
        from neuronscope.jobs import JobStore, connect

        redis_client = connect(live_service.settings.require_redis_url())
        store = JobStore(redis_client, prefix=live_service.settings.key_prefix)
        try:
            for _ in range(500):
                records, _cursor = store.list(limit=1)
                if records:
                    play_worker(live_service.settings, records[0].job_id, sample_report)
                    return
                threading.Event().wait(0.02)
        finally:
            redis_client.close()

    thread = threading.Thread(target=worker_when_queued)
    thread.start()
    out = tmp_path / "r.json"
    code = main(["submit", str(tiny_model.model), str(tiny_model.dataset), "--server", live_service.url,
                 "--out", str(out), "--poll-interval", "0.02", "--timeout", "30",
                 "--fail-if", "max(layers.dying_fraction) > 0.2"])  # fmt: skip
    thread.join()
    captured = capsys.readouterr()
    assert code == EXIT_GATE_FAILED, captured.err
    assert Report.model_validate_json(out.read_text()) == sample_report
    assert "FAILED gate" in captured.err
