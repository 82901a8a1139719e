"""The analysis child process: ``python -m worker.child.runner --model M --dataset D --config C --report R``.

One process per job (or per stage of a split job: ``--stage prepare|capture|gather|ps|td|merge
--work DIR``, see :mod:`worker.engine.plan`), started by :mod:`worker.jobs.stage`. Before it loads
anything it limits itself (address space, CPU time, no core dumps) and arranges to die with its parent. With
``--no-torchscript`` it refuses a model file whose content is TorchScript, whatever the job record
says. It tells malloc to keep freed memory for reuse (``worker.engine.allocator``), then runs
``worker.engine.analyze`` (or the stage) and speaks to the parent in JSON lines on its original
stdout::

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
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronscope.confinement import ConfinementReport

_MIB = 1024 * 1024
_PR_SET_PDEATHSIG = 1
STAGES = ("prepare", "capture", "gather", "ps", "td", "merge")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker.child.runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--stage", choices=["analyze", *STAGES], default="analyze")
    parser.add_argument("--model", type=Path, help="the model file (analyze, prepare, capture, td)")
    parser.add_argument("--dataset", type=Path, help="the dataset file (analyze, prepare, capture, td)")
    parser.add_argument("--config", type=Path, help="AnalysisConfig JSON file (every stage)")
    parser.add_argument("--report", type=Path, help="where to write the report JSON (analyze, merge)")
    parser.add_argument("--work", type=Path, help="the split job's files: plan.json, stage outputs")
    parser.add_argument("--chunk", type=int, default=0, help="the block index (capture, ps, td)")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit; 0: none")
    parser.add_argument("--cpu-seconds", type=int, default=0, help="CPU-time limit; 0: none")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="exit unless this is the parent; 0: no check"
    )
    parser.add_argument("--no-torchscript", action="store_true", help="refuse TorchScript model files")
    parser.add_argument(
        "--confine",
        choices=["required", "best-effort"],
        default="required",
        help="confine this process before it opens the model (neuronscope.confinement): required "
        "fails the job where it cannot be set up; best-effort goes on, refusing models that are code "
        "unless --allow-unconfined-code",
    )
    parser.add_argument(
        "--allow-unconfined-code",
        action="store_true",
        help="with --confine best-effort: open a TorchScript model even where confinement failed",
    )
    args = parser.parse_args(argv)
    needed = {
        "analyze": ("model", "dataset", "config", "report"),
        "prepare": ("model", "dataset", "config", "work"),
        "capture": ("model", "dataset", "config", "work"),
        "gather": ("config", "work"),
        "ps": ("config", "work"),
        "td": ("model", "dataset", "config", "work"),
        "merge": ("config", "work", "report"),
    }[args.stage]
    missing = [f"--{name}" for name in needed if getattr(args, name) is None]
    if missing:
        parser.error(f"--stage {args.stage} needs {', '.join(missing)}")
    return args


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
    """SIGKILL this process when its parent dies; exit now if the parent is not ``parent_pid``
    (it died before ``prctl`` took effect). ``0`` skips that check (under a sandbox command)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def _private_dirs(args: argparse.Namespace) -> list[Path]:
    """Where this process may write: its working directory (the job's private copy of its inputs)
    and a split job's ``--work`` directory."""
    dirs = [Path.cwd()]
    if args.work is not None:
        dirs.append(args.work.resolve())
    return dirs


def confine_self(args: argparse.Namespace) -> ConfinementReport | None:
    """Confine this process to its private directories before the model is opened.

    Raises ``AnalysisError(sandbox_unavailable)`` when confinement is required and cannot be set
    up, and when it is best effort, failed, and the model is code that was not explicitly allowed
    to run unconfined. Returns what was put in place (``None``: nothing).
    """
    from neuronscope.confinement import ConfinementUnavailable, confine, default_paths
    from worker.engine.errors import AnalysisError

    inputs = [p.resolve() for p in (args.model, args.dataset, args.config) if p is not None]
    paths = default_paths(_private_dirs(args), extra_read=inputs)
    try:
        return confine(paths, require=args.confine == "required")
    except (ConfinementUnavailable, OSError) as exc:
        if args.confine == "required":
            raise AnalysisError(
                f"the analysis process could not be confined on this worker ({type(exc).__name__}); "
                "PyTorch-format models are refused here (NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED)",
                code="sandbox_unavailable",
            ) from None
        report = None
    if (report is None or not report.active) and args.model is not None and not args.allow_unconfined_code:
        from neuronscope.validation import CODE_FORMATS
        from worker.engine.capture.loader import detect_format

        if (found := detect_format(args.model)) in CODE_FORMATS:
            raise AnalysisError(
                f"model: a {found} model is code, and this worker cannot confine the process that "
                "would run it; export the model to ONNX (or the operator sets "
                "NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true on a trusted network)",
                code="sandbox_unavailable",
            )
    return report


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


_KNOWN_EXCEPTION_MODULES = ("builtins", "torch", "onnxruntime", "numpy", "onnx", "neuronscope", "worker")


def _exception_kind(exc: BaseException) -> str:
    """The exception's class name where a library of ours or the runtime's defines it; a model
    can define its own exception classes, so any other name is not passed on."""
    kind = type(exc)
    if kind.__module__.split(".")[0] in _KNOWN_EXCEPTION_MODULES and kind.__name__.isidentifier():
        return kind.__name__[:64]
    return "exception"


class _Channel:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, **fields}) + "\n")
        self._stream.flush()

    def progress(self, stage: str, fraction: float) -> None:
        self.send("progress", stage=str(stage), fraction=float(fraction))


def refuse_torchscript(model: Path) -> None:
    """Raise ``AnalysisError(torchscript_disabled)`` when the engine would open ``model`` as
    TorchScript or ``.pt2`` (the same content check the engine's loader makes)."""
    from neuronscope.validation import CODE_FORMATS
    from worker.engine.capture.loader import detect_format
    from worker.engine.errors import AnalysisError

    if (found := detect_format(model)) in CODE_FORMATS:
        raise AnalysisError(
            f"model: PyTorch-format models ({found}) are switched off on this worker "
            "(NEURONSCOPE_ALLOW_TORCHSCRIPT=false); export the model to ONNX",
            code="torchscript_disabled",
        )


def _run_stage(args: argparse.Namespace, channel: _Channel) -> None:
    from neuronscope.contracts import AnalysisConfig

    confine_self(args)
    if args.no_torchscript and args.model is not None:
        refuse_torchscript(args.model)
    config = AnalysisConfig.model_validate_json(args.config.read_text())
    channel.progress("loading", 0.0)
    if args.stage == "analyze":
        from worker.engine import analyze

        report = analyze(args.model, args.dataset, config, progress=channel.progress)
        args.report.write_text(report.to_json(indent=None))
        return
    from worker.engine import stages
    from worker.engine.plan import CAPTURED_FILE, PLAN_FILE, TD_PAIRS_FILE, chunk_file

    work: Path = args.work
    plan = stages.read_plan(work / PLAN_FILE)
    if args.stage == "prepare":
        stages.prepare(args.model, args.dataset, config, plan, work, channel.progress)
    elif args.stage == "capture":
        out = work / chunk_file("capture", args.chunk)
        stages.run_capture_block(args.model, args.dataset, config, plan, args.chunk, out, channel.progress)
    elif args.stage == "gather":
        stages.gather(config, plan, work, channel.progress)
    elif args.stage == "ps":
        out = work / chunk_file("ps", args.chunk)
        stages.run_ps_block(work / CAPTURED_FILE, config, plan, args.chunk, out, channel.progress)
    elif args.stage == "td":
        out = work / chunk_file("td", args.chunk)
        stages.run_td_block(
            args.model, args.dataset, config, plan, work / TD_PAIRS_FILE, args.chunk, out, channel.progress
        )
    else:
        report = stages.merge(config, plan, work, channel.progress)
        args.report.write_text(report.to_json(indent=None))


def run(args: argparse.Namespace, channel: _Channel) -> int:
    """Run the analysis (or one stage of a split one) and report its outcome on ``channel``;
    the exit status."""
    from neuronscope.errors import NeuronscopeError

    try:
        _run_stage(args, channel)
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
                message=f"the analysis stopped with an unexpected {_exception_kind(exc)} "
                "(its message is in the worker's log, not here: it may come from the model's own code)",
            )
        return 3
    channel.send("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    channel = _Channel(_protocol_channel())
    _die_with_parent(args.parent_pid)
    set_limits(args.memory_mb, args.cpu_seconds)
    from worker.engine.allocator import keep_freed_memory

    keep_freed_memory()
    return run(args, channel)


if __name__ == "__main__":
    sys.exit(main())
