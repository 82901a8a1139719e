"""The commands that read reports already made: ``compare``, ``check`` and ``trend``."""

from __future__ import annotations

import argparse

from neuronscope.cli.output import load_report, parse_gate_args, run_gates, usage


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
