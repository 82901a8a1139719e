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
    neuronscope trend REPORT.json... [--labels A,B,...] [--out T.json] [--html T.html] [--fail-if EXPR ...]
        Reports of successive training checkpoints as one trend: dead, dying and label-dying shares
        and separation beyond chance per layer and for the network; gates on the trend's JSON.
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
import os
import sys
from collections.abc import Callable, Sequence

from neuronscope.cli.output import (
    EXIT_ANALYSIS_FAILED,
    EXIT_CANCELLED,
    EXIT_CONNECTION,
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)
from neuronscope.cli.parser import build_parser
from neuronscope.errors import NeuronscopeError

__all__ = [
    "EXIT_ANALYSIS_FAILED",
    "EXIT_CANCELLED",
    "EXIT_CONNECTION",
    "EXIT_GATE_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


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
