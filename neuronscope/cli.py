"""The ``neuronscope`` command line.

Commands::

    neuronscope analyze MODEL DATASET [--config C.json] [--out R.json] [--html R.html]
                        [--fail-if EXPR ...] [--quiet]
        Run the analysis here, in this process (no server). Prints a short summary, writes the
        JSON report (default ./<model stem>.report.json) and optionally the HTML report.
    neuronscope submit MODEL DATASET --server URL [--api-key KEY] [--config C.json] [--wait]
                        [--out R.json] [--html R.html] [--fail-if EXPR ...] [--timeout S] [--quiet]
        Upload to a neuronscope server and queue the analysis. Without --wait it prints the job id
        and exits; --wait (implied by --out, --html and --fail-if) polls with a progress bar, then
        prints the summary and writes the reports. The API key may come from NEURONSCOPE_API_KEY.
        On --timeout or Ctrl-C the job is cancelled on the server.
    neuronscope compare OLD.json NEW.json [--fail-if EXPR ...]
        Metric deltas (new − old) overall and per layer (matched by name); gates may use delta().
    neuronscope check REPORT.json --fail-if EXPR [...]
        Evaluate gates on an existing report.
    neuronscope serve [--host H] [--port P] [--data-dir DIR] [--workers N]
        The service in standalone mode (API + worker + private Redis) until Ctrl-C.
    neuronscope example [--out-dir DIR] [--variant healthy|dying]
        Train the small digits MLP, write it as ONNX and the test split as .npz.

Gates (``--fail-if``, repeatable; see ``neuronscope.gates``): ``PATH OP NUMBER`` with
``max()/min()/mean()`` over lists and ``delta()`` in compare; a gate fails when it is TRUE, e.g.
``--fail-if "max(layers.dead_fraction) > 0.2"``.

Exit codes (distinct, for pipelines):

    0  EXIT_OK              success, every gate passed
    1  EXIT_GATE_FAILED     at least one --fail-if gate is true (the reports are still written)
    2  EXIT_USAGE           bad arguments, unreadable or invalid config / report / gate, missing file,
                            a request the server rejected as invalid (HTTP 400/413/415/422)
    3  EXIT_ANALYSIS_FAILED the analysis (local) or the job (server) failed, e.g. a dataset that does
                            not fit the model; also unexpected internal errors
    4  EXIT_CONNECTION      the server cannot be reached, refused the request (401/403/404) or failed (5xx)
    5  EXIT_CANCELLED       the job was cancelled, --timeout expired, or Ctrl-C

Set ``NEURONSCOPE_DEBUG=1`` to get a traceback for unexpected errors.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

import neuronscope
from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.errors import NeuronscopeError
from neuronscope.gates import Gate, GateError, evaluate_gates, parse_gates, report_data
from neuronscope.progress import ProgressBar

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_ANALYSIS_FAILED = 3
EXIT_CONNECTION = 4
EXIT_CANCELLED = 5

API_KEY_ENV = "NEURONSCOPE_API_KEY"
#: Server answers that mean "your request is invalid" (usage), not "the server is unwell".
_USAGE_STATUSES = frozenset({400, 413, 415, 422})


class CliError(Exception):
    """Ends the command with one line on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _usage(message: str) -> NoReturn:
    raise CliError(message, EXIT_USAGE)


# ---------------------------------------------------------------------------------------------
# Output helpers


def _one_line_validation(exc: ValidationError, source: str) -> str:
    from neuronscope.client import describe_validation_error

    return describe_validation_error(exc, source)


def load_config(path: Path | None) -> AnalysisConfig | None:
    """The ``--config`` file, validated; ``None`` when not given."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        _usage(f"cannot read config file {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        _usage(f"config file {path} is not UTF-8 text")
    try:
        return AnalysisConfig.model_validate_json(text)
    except ValidationError as exc:
        _usage(_one_line_validation(exc, f"config file {path}"))


def load_report(path: Path) -> Report:
    try:
        data = path.read_bytes()
    except OSError as exc:
        _usage(f"cannot read report {path}: {exc.strerror or exc}")
    try:
        return Report.model_validate_json(data)
    except ValidationError as exc:
        _usage(_one_line_validation(exc, f"report {path}"))


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        _usage(f"{what} {path} does not exist")
    if not path.is_file():
        _usage(f"{what} {path} is not a file")


def _write_text(path: Path, text: str) -> None:
    """Write atomically (temporary file, then rename) so a pipeline never reads half a report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        _usage(f"cannot write {path}: {exc.strerror or exc}")


def _parse_gates(texts: Sequence[str] | None, *, compare: bool = False) -> list[Gate]:
    try:
        return parse_gates(texts or [], compare=compare)
    except GateError as exc:
        _usage(exc.message)


def _run_gates(
    gates: Sequence[Gate], report: Report, old: Report | None = None, *, quiet: bool = False
) -> int:
    if not gates:
        return EXIT_OK
    try:
        outcomes = evaluate_gates(gates, report_data(report), report_data(old) if old is not None else None)
    except GateError as exc:
        _usage(exc.message)
    failed = [o for o in outcomes if o.failed]
    for outcome in outcomes:
        if outcome.failed:
            print(outcome.describe(), file=sys.stderr)
        elif not quiet:
            print(outcome.describe())
    if failed:
        print(f"{len(failed)} of {len(outcomes)} gates failed", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _default_report_path(model: Path) -> Path:
    return Path.cwd() / f"{model.stem}.report.json"


def _emit_report(report: Report, out: Path, html_path: Path | None, *, quiet: bool) -> None:
    from neuronscope.summary import summarize

    _write_text(out, report.to_json())
    if html_path is not None:
        from neuronscope.report_html import render_html

        _write_text(html_path, render_html(report))
    if not quiet:
        print(summarize(report))
        print(f"JSON report: {out}")
        if html_path is not None:
            print(f"HTML report: {html_path}")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_analyze(args: argparse.Namespace) -> int:
    gates = _parse_gates(args.fail_if)
    config = load_config(args.config) or AnalysisConfig()
    _require_file(args.model, "model")
    _require_file(args.dataset, "dataset")
    try:
        from worker.engine import analyze
        from worker.engine.allocator import keep_freed_memory
        from worker.engine.errors import AnalysisError
    except ImportError as exc:
        _usage(f"the analysis engine is not installed here (pip install 'neuronscope[engine]'): {exc}")
    keep_freed_memory()
    bar = ProgressBar(enabled=not args.quiet)
    try:
        report = analyze(args.model, args.dataset, config, progress=bar.update, trusted_model=True)
    except AnalysisError as exc:
        bar.close()
        code = EXIT_CANCELLED if exc.code == "cancelled" else EXIT_ANALYSIS_FAILED
        raise CliError(f"analysis failed ({exc.code}): {exc.message}", code) from None
    except KeyboardInterrupt:
        bar.close()
        raise CliError("interrupted", EXIT_CANCELLED) from None
    bar.close()
    _emit_report(report, args.out or _default_report_path(args.model), args.html, quiet=args.quiet)
    return _run_gates(gates, report, quiet=args.quiet)


def _client_error_exit(exc: Exception) -> CliError:
    from neuronscope.client import (
        ClientConnectionError,
        ClientError,
        JobCancelledError,
        JobFailedError,
        JobTimeoutError,
        ServerError,
    )

    assert isinstance(exc, ClientError)
    if isinstance(exc, ClientConnectionError):
        return CliError(f"connection failed: {exc.message}", EXIT_CONNECTION)
    if isinstance(exc, ServerError):
        code = EXIT_USAGE if exc.status_code in _USAGE_STATUSES else EXIT_CONNECTION
        hint = " (check --api-key or NEURONSCOPE_API_KEY)" if exc.status_code in (401, 403) else ""
        return CliError(f"server error ({exc.code}): {exc.message}{hint}", code)
    if isinstance(exc, JobFailedError):
        return CliError(f"job {exc.job.job_id} failed ({exc.code}): {exc.message}", EXIT_ANALYSIS_FAILED)
    if isinstance(exc, JobCancelledError):
        return CliError(f"job {exc.job.job_id} was cancelled: {exc.message}", EXIT_CANCELLED)
    if isinstance(exc, JobTimeoutError):
        return CliError(exc.message, EXIT_CANCELLED)
    return CliError(f"{exc.code}: {exc.message}", EXIT_CONNECTION)


def cmd_submit(args: argparse.Namespace) -> int:
    from neuronscope.client import Client, ClientError, Job, JobInfo, JobTimeoutError

    gates = _parse_gates(args.fail_if)
    config = load_config(args.config)
    _require_file(args.model, "model")
    _require_file(args.dataset, "dataset")
    if args.timeout is not None and args.timeout <= 0:
        _usage(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    wait = args.wait or bool(gates) or args.out is not None or args.html is not None
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    job: Job | None = None
    try:
        with Client(args.server, api_key=api_key, timeout=args.request_timeout) as client:
            job = client.analyze(args.model, args.dataset, config=config)
            if not wait:
                print(f"job {job.job_id} queued")
                print(f"status: {client.url}{job.path}")
                print(f"report: {client.url}{job.path}/report")
                return EXIT_OK
            if not args.quiet:
                print(f"job {job.job_id} submitted to {client.url}", file=sys.stderr)
            bar = ProgressBar(enabled=not args.quiet)

            def on_progress(info: JobInfo) -> None:
                if info.status == "running":
                    bar.update(info.progress.stage or "running", info.progress.fraction)
                elif info.status == "queued":
                    bar.update("queued", 0.0)

            try:
                job.wait(poll_interval=args.poll_interval, timeout=args.timeout, on_progress=on_progress)
            except (JobTimeoutError, KeyboardInterrupt) as exc:
                bar.close()
                with contextlib.suppress(ClientError):
                    job.cancel()
                if isinstance(exc, KeyboardInterrupt):
                    raise CliError(f"interrupted: job {job.job_id} cancelled", EXIT_CANCELLED) from None
                raise CliError(
                    f"job {job.job_id} did not finish within {args.timeout:g} s; it was cancelled",
                    EXIT_CANCELLED,
                ) from None
            finally:
                bar.close()
            report = job.report()
    except ClientError as exc:
        raise _client_error_exit(exc) from None
    except KeyboardInterrupt:
        raise CliError("interrupted", EXIT_CANCELLED) from None
    _emit_report(report, args.out or _default_report_path(args.model), args.html, quiet=args.quiet)
    return _run_gates(gates, report, quiet=args.quiet)


def cmd_compare(args: argparse.Namespace) -> int:
    from neuronscope.compare import compare_reports, format_comparison

    gates = _parse_gates(args.fail_if, compare=True)
    old, new = load_report(args.old), load_report(args.new)
    if not args.quiet:
        print(format_comparison(compare_reports(old, new)))
        if gates:
            print()
    return _run_gates(gates, new, old, quiet=args.quiet)


def cmd_check(args: argparse.Namespace) -> int:
    gates = _parse_gates(args.fail_if)
    if not gates:
        _usage("check: expected at least one --fail-if gate")
    return _run_gates(gates, load_report(args.report), quiet=args.quiet)


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from neuronscope.settings import get_settings
        from service.standalone import serve
    except ImportError as exc:
        _usage(f"the service is not installed here (pip install 'neuronscope[api,engine]'): {exc}")
    try:
        data_dir = args.data_dir or get_settings().data_dir
    except ValidationError as exc:
        _usage(_one_line_validation(exc, "the NEURONSCOPE_* environment settings"))
    if args.workers < 1:
        _usage(f"--workers: expected at least 1, got {args.workers}")
    try:
        serve(args.host, args.port, Path(data_dir), workers=args.workers)
    except NeuronscopeError as exc:
        raise CliError(f"serve failed ({exc.code}): {exc.message}", EXIT_CONNECTION) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_example(args: argparse.Namespace) -> int:
    from neuronscope.examples import make_example

    files = make_example(args.out_dir, variant=args.variant)
    print(f"model:   {files.model}")
    print(f"dataset: {files.dataset}")
    print(f"test accuracy: {files.test_accuracy * 100:.1f}%")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Parser


def _add_gate_args(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--fail-if", action="append", metavar="EXPR", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuronscope",
        description="How much of your neural network is really working: dying neurons, activation "
        "patterns and pattern similarity (Jiang et al. 2023).",
        epilog="Exit codes: 0 ok, 1 gate failed, 2 usage/config error, 3 analysis/job failed, "
        "4 connection/server error, 5 cancelled/timeout.",
    )
    parser.add_argument("--version", action="version", version=f"neuronscope {neuronscope.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gate_help = "fail (exit 1) when EXPR is true, e.g. 'max(layers.dead_fraction) > 0.2'; repeatable"

    p = sub.add_parser("analyze", help="analyse a model here, in this process")
    p.add_argument("model", type=Path, help="ONNX (.onnx), .pt2 (torch.export) or TorchScript (.pt) model")
    p.add_argument("dataset", type=Path, help=".npz with x (and y), or .npy")
    p.add_argument("--config", type=Path, metavar="C.json", help="analysis config (JSON)")
    p.add_argument(
        "--out", type=Path, metavar="REPORT.json", help="JSON report (default ./MODEL.report.json)"
    )
    p.add_argument("--html", type=Path, metavar="REPORT.html", help="also write the HTML report")
    _add_gate_args(p, gate_help)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary, no progress; errors only")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("submit", help="analyse on a neuronscope server")
    p.add_argument("model", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--server", required=True, metavar="URL", help="e.g. http://localhost:8000")
    p.add_argument("--api-key", metavar="KEY", help=f"API key (default: ${API_KEY_ENV})")
    p.add_argument("--config", type=Path, metavar="C.json")
    p.add_argument(
        "--wait", action="store_true", help="wait for the report (implied by --out/--html/--fail-if)"
    )
    p.add_argument("--out", type=Path, metavar="REPORT.json")
    p.add_argument("--html", type=Path, metavar="REPORT.html")
    _add_gate_args(p, gate_help)
    p.add_argument("--timeout", type=float, metavar="S", help="give up (and cancel the job) after S seconds")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--request-timeout", type=float, default=300.0, metavar="S", help="per HTTP request")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("compare", help="metric deltas between two reports")
    p.add_argument("old", type=Path, metavar="OLD.json")
    p.add_argument("new", type=Path, metavar="NEW.json")
    _add_gate_args(
        p, "fail when EXPR is true; delta(PATH) is new − old, e.g. 'delta(transition_density.mean) < -2'"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("check", help="evaluate gates on an existing report")
    p.add_argument("report", type=Path, metavar="REPORT.json")
    _add_gate_args(p, gate_help)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", help="run the service (standalone: API + worker + private Redis)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--data-dir",
        type=Path,
        help="storage root (default: $NEURONSCOPE_DATA_DIR or ~/.local/share/neuronscope)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (standalone mode)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("example", help="make the example model (digits MLP, ONNX) and dataset (.npz)")
    p.add_argument("--out-dir", type=Path, default=Path("neuronscope-example"))
    p.add_argument("--variant", choices=["healthy", "dying"], default="healthy")
    p.set_defaults(func=cmd_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version exit 0, bad usage exits 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as exc:
        print(f"neuronscope {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"neuronscope {args.command}: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except NeuronscopeError as exc:
        print(f"neuronscope {args.command}: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ANALYSIS_FAILED
    except Exception as exc:
        if os.environ.get("NEURONSCOPE_DEBUG"):
            raise
        print(
            f"neuronscope {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set NEURONSCOPE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ANALYSIS_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
