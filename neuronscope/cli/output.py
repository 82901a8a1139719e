"""What every command shares: the exit codes, the command line's one error type (:class:`CliError`),
reading configs and reports, writing files atomically, and running ``--fail-if`` gates."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import BaseModel, ValidationError

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.gates import Gate, GateError, evaluate_gates, parse_gates, report_data

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_ANALYSIS_FAILED = 3
EXIT_CONNECTION = 4
EXIT_CANCELLED = 5


class CliError(Exception):
    """Ends the command with one line on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def usage(message: str) -> NoReturn:
    raise CliError(message, EXIT_USAGE)


def one_line_validation(exc: ValidationError, source: str) -> str:
    from neuronscope.client import describe_validation_error

    return describe_validation_error(exc, source)


def load_config(path: Path | None) -> AnalysisConfig | None:
    """The ``--config`` file, validated; ``None`` when not given."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        usage(f"cannot read config file {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        usage(f"config file {path} is not UTF-8 text")
    try:
        return AnalysisConfig.model_validate_json(text)
    except ValidationError as exc:
        usage(one_line_validation(exc, f"config file {path}"))


def load_report(path: Path) -> Report:
    try:
        data = path.read_bytes()
    except OSError as exc:
        usage(f"cannot read report {path}: {exc.strerror or exc}")
    try:
        return Report.model_validate_json(data)
    except ValidationError as exc:
        usage(one_line_validation(exc, f"report {path}"))


def require_file(path: Path, what: str) -> None:
    if not path.exists():
        usage(f"{what} {path} does not exist")
    if not path.is_file():
        usage(f"{what} {path} is not a file")


def write_text(path: Path, text: str) -> None:
    """Write atomically (temporary file, then rename) so a pipeline never reads half a report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        usage(f"cannot write {path}: {exc.strerror or exc}")


def parse_gate_args(
    texts: Sequence[str] | None, *, compare: bool = False, document: type[BaseModel] = Report
) -> list[Gate]:
    try:
        return parse_gates(texts or [], compare=compare, document=document)
    except GateError as exc:
        usage(exc.message)


def run_gates(
    gates: Sequence[Gate], report: BaseModel, old: BaseModel | None = None, *, quiet: bool = False
) -> int:
    """Evaluate ``gates`` on a report or trend (``old``: the compared report); print each outcome."""
    if not gates:
        return EXIT_OK
    try:
        outcomes = evaluate_gates(gates, report_data(report), report_data(old) if old is not None else None)
    except GateError as exc:
        usage(exc.message)
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


def default_report_path(model: Path) -> Path:
    return Path.cwd() / f"{model.stem}.report.json"


def emit_report(report: Report, out: Path, html_path: Path | None, *, quiet: bool) -> None:
    from neuronscope.summary import summarize

    write_text(out, report.to_json())
    if html_path is not None:
        from neuronscope.report_html import render_html

        write_text(html_path, render_html(report))
    if not quiet:
        print(summarize(report))
        print(f"JSON report: {out}")
        if html_path is not None:
            print(f"HTML report: {html_path}")
