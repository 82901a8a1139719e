"""The commands that run here, in this process: ``analyze`` (the engine), ``serve`` (the standalone
service) and ``example``. They are why the command line is the application layer: the only code
outside ``service/`` and ``worker/`` that imports them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pydantic import ValidationError

from neuronscope.cli.output import (
    EXIT_ANALYSIS_FAILED,
    EXIT_CANCELLED,
    EXIT_CONNECTION,
    EXIT_OK,
    CliError,
    default_report_path,
    emit_report,
    load_config,
    one_line_validation,
    parse_gate_args,
    require_file,
    run_gates,
    usage,
)
from neuronscope.contracts.config import AnalysisConfig
from neuronscope.errors import NeuronscopeError
from neuronscope.progress import ProgressBar


def cmd_analyze(args: argparse.Namespace) -> int:
    gates = parse_gate_args(args.fail_if)
    config = load_config(args.config) or AnalysisConfig()
    require_file(args.model, "model")
    require_file(args.dataset, "dataset")
    try:
        from worker.engine import analyze
        from worker.engine.allocator import keep_freed_memory
        from worker.engine.errors import AnalysisError
    except ImportError as exc:
        usage(f"the analysis engine is not installed here (pip install 'neuronscope[engine]'): {exc}")
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
    emit_report(report, args.out or default_report_path(args.model), args.html, quiet=args.quiet)
    return run_gates(gates, report, quiet=args.quiet)


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from neuronscope.settings import get_settings
        from service.standalone import serve
    except ImportError as exc:
        usage(f"the service is not installed here (pip install 'neuronscope[api,engine]'): {exc}")
    try:
        data_dir = args.data_dir or get_settings().data_dir
    except ValidationError as exc:
        usage(one_line_validation(exc, "the NEURONSCOPE_* environment settings"))
    if args.workers < 1:
        usage(f"--workers: expected at least 1, got {args.workers}")
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
