"""The argument parser: one subcommand per command module function."""

from __future__ import annotations

import argparse
from pathlib import Path

import neuronscope
from neuronscope.cli.local import cmd_analyze, cmd_example, cmd_serve
from neuronscope.cli.remote import API_KEY_ENV, cmd_submit
from neuronscope.cli.reports import cmd_check, cmd_compare, cmd_trend


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

    p = sub.add_parser("trend", help="dead, dying and separation over training checkpoints")
    p.add_argument(
        "reports", type=Path, nargs="+", metavar="REPORT.json", help="one per checkpoint, in training order"
    )
    p.add_argument("--labels", metavar="A,B,...", help="checkpoint names (default: the report file stems)")
    p.add_argument("--out", type=Path, metavar="TREND.json", help="write the trend as JSON")
    p.add_argument("--html", type=Path, metavar="TREND.html", help="write the trend as an HTML page")
    _add_gate_args(
        p, "fail when EXPR is true, e.g. 'change.dead_fraction > 0.05' or 'max(network.dying_fraction) > 0.3'"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_trend)

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
