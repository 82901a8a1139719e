"""The commands that read reports already made: ``compare``, ``check`` and ``trend``."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuronscope.cli.output import load_report, parse_gate_args, require_file, run_gates, usage, write_text
from neuronscope.contracts.trend import Trend
from neuronscope.errors import InvalidInput


def cmd_compare(args: argparse.Namespace) -> int:
    from neuronscope.compare import compare_reports, format_comparison

    gates = parse_gate_args(args.fail_if, compare=True)
    old, new = load_report(args.old), load_report(args.new)
    if not args.quiet:
        print(format_comparison(compare_reports(old, new)))
        if gates:
            print()
    return run_gates(gates, new, old, quiet=args.quiet)


def cmd_check(args: argparse.Namespace) -> int:
    gates = parse_gate_args(args.fail_if)
    if not gates:
        usage("check: expected at least one --fail-if gate")
    return run_gates(gates, load_report(args.report), quiet=args.quiet)


def cmd_trend(args: argparse.Namespace) -> int:
    from neuronscope.trend import build_trend, format_trend
    from neuronscope.trend_html import render_trend_html

    gates = parse_gate_args(args.fail_if, document=Trend)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    paths: list[Path] = args.reports
    for path in paths:
        require_file(path, "report")
    reports = [load_report(path) for path in paths]
    try:
        trend = build_trend(reports, labels if labels is not None else [path.stem for path in paths])
    except InvalidInput as exc:
        usage(exc.message)
    if args.out is not None:
        write_text(args.out, trend.to_json())
    if args.html is not None:
        write_text(args.html, render_trend_html(trend))
    if not args.quiet:
        print(format_trend(trend))
        for what, path in (("JSON trend", args.out), ("HTML trend", args.html)):
            if path is not None:
                print(f"{what}: {path}")
        if gates:
            print()
    return run_gates(gates, trend, quiet=args.quiet)
