"""The analysis child process: ``python -m worker.runner --model M --dataset D --config C --report R``.

One process per job, started by :mod:`worker.sandbox`. Before it loads anything it limits itself
(address space, CPU time, no core dumps) and arranges to die with its parent. It then runs
``worker.engine.analyze`` and speaks to the parent in JSON lines on its original stdout::

    {"event": "progress", "stage": "capture", "fraction": 0.4}
    {"event": "error", "code": "dataset_shape_mismatch", "message": "..."}
    {"event": "done"}

Anything else the model, a runtime or a library prints goes to stderr, never into that channel.
The report is written to ``--report``; the parent validates and stores it. A crash of the model
or the runtime (segfault, out of memory, CPU limit) ends this process, not the worker.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import IO, Any

_MIB = 1024 * 1024
_PR_SET_PDEATHSIG = 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True, help="AnalysisConfig JSON file")
    parser.add_argument("--report", type=Path, required=True, help="where to write the report JSON")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit; 0: none")
    parser.add_argument("--cpu-seconds", type=int, default=0, help="CPU-time limit; 0: none")
    parser.add_argument("--parent-pid", type=int, default=0, help="die when this process dies")
    return parser.parse_args(argv)


def set_limits(memory_mb: int, cpu_seconds: int) -> None:
    """Limit this process before it loads the model (limits are inherited by anything it starts)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb > 0:
        limit = memory_mb * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds > 0:
        # SIGXCPU at the soft limit, SIGKILL at the hard one if SIGXCPU was caught.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def _die_with_parent(parent_pid: int) -> None:
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _protocol_channel() -> IO[str]:
    """Keep the real stdout for protocol lines; send fd 1 (and ``sys.stdout``) to stderr."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return channel


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc).lower()
    return any(
        s in text for s in ("cannot allocate memory", "failed to allocate", "out of memory", "bad_alloc")
    )


class _Channel:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, **fields}) + "\n")
        self._stream.flush()

    def progress(self, stage: str, fraction: float) -> None:
        self.send("progress", stage=str(stage), fraction=float(fraction))


def run(args: argparse.Namespace, channel: _Channel) -> int:
    """Run the analysis and report its outcome on ``channel``; the exit status."""
    from neuronscope.contracts import AnalysisConfig
    from neuronscope.errors import NeuronscopeError

    try:
        config = AnalysisConfig.model_validate_json(args.config.read_text())
        channel.progress("loading", 0.0)
        from worker.engine import analyze

        report = analyze(args.model, args.dataset, config, progress=channel.progress)
        args.report.write_text(report.to_json(indent=None))
    except NeuronscopeError as exc:
        channel.send("error", code=exc.code, message=exc.message)
        return 2
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        if _is_out_of_memory(exc):
            limit = f"{args.memory_mb} MiB" if args.memory_mb else "the memory available"
            channel.send(
                "error",
                code="out_of_memory",
                message=f"the analysis needed more memory than {limit} (NEURONSCOPE_JOB_MEMORY_LIMIT_MB); "
                "use a smaller dataset or batch_size, or raise the limit",
            )
        elif isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        else:
            channel.send(
                "error",
                code="internal_error",
                message=f"the analysis stopped with an unexpected {type(exc).__name__}: {exc}",
            )
        return 3
    channel.send("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    channel = _Channel(_protocol_channel())
    _die_with_parent(args.parent_pid)
    set_limits(args.memory_mb, args.cpu_seconds)
    return run(args, channel)


if __name__ == "__main__":
    sys.exit(main())
