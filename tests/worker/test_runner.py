"""The analysis child process and its supervisor, with real processes: protocol, crashes, limits,
time-outs and cancellation (the fake children are small Python programs, the real one the runner)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from neuronscope.jobs import JobError
from worker.runner import _is_out_of_memory
from worker.sandbox import ChildResult, Limits, child_env, outcome_error, run_child

LIMITS = Limits(wall_s=60.0, cpu_s=30, memory_mb=512)


def run_script(tmp_path: Path, script: str, **kwargs: Any) -> tuple[ChildResult, list[tuple[str, float]]]:
    progress: list[tuple[str, float]] = []
    options: dict[str, Any] = {"wall_s": 30.0, "should_cancel": lambda: False, "poll_s": 0.1} | kwargs
    result = run_child(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=child_env(tmp_path, threads=1),
        on_progress=lambda stage, fraction: progress.append((stage, fraction)),
        **options,
    )
    return result, progress


def test_protocol_lines_are_followed_and_other_output_ignored(tmp_path: Path) -> None:
    result, progress = run_script(
        tmp_path,
        """
        import json, sys
        print("library chatter on stdout")
        for i in range(3):
            print(json.dumps({"event": "progress", "stage": "capture", "fraction": i / 2}), flush=True)
        print("[1, 2]")
        print(json.dumps({"event": "done"}))
        """,
    )
    assert result.returncode == 0 and result.done and result.error is None
    assert progress == [("capture", 0.0), ("capture", 0.5), ("capture", 1.0)]
    assert outcome_error(result, LIMITS) is None


def test_child_does_not_inherit_service_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://secret@example:6379/0")
    monkeypatch.setenv("NEURONSCOPE_DATA_DIR", "/somewhere/shared")
    env = child_env(tmp_path, threads=2)
    assert "REDIS_URL" not in env and "NEURONSCOPE_DATA_DIR" not in env
    assert env["TMPDIR"] == str(tmp_path) and env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGSEGV, "analysis_crashed"), (signal.SIGKILL, "analysis_killed")]
)
def test_a_crashing_child_fails_with_a_code(tmp_path: Path, sig: int, code: str) -> None:
    result, _ = run_script(tmp_path, f"import os; os.kill(os.getpid(), {int(sig)})")
    assert result.returncode == -sig
    error = outcome_error(result, LIMITS)
    assert error is not None and error.code == code


def test_an_error_event_wins_over_the_exit_status(tmp_path: Path) -> None:
    result, _ = run_script(
        tmp_path,
        """
        import json, sys
        message = "x: expected [N, 16]"
        print(json.dumps({"event": "error", "code": "dataset_shape_mismatch", "message": message}))
        sys.exit(2)
        """,
    )
    assert outcome_error(result, LIMITS) == JobError(
        code="dataset_shape_mismatch", message="x: expected [N, 16]"
    )


def test_exit_without_report_is_a_crash(tmp_path: Path) -> None:
    result, _ = run_script(tmp_path, "import sys; sys.exit(0)")
    error = outcome_error(result, LIMITS)
    assert error is not None and error.code == "analysis_crashed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    grandchild = tmp_path / "grandchild.pid"
    start = time.monotonic()
    result, _ = run_script(
        tmp_path,
        f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(grandchild)!r}, "w").write(str(p.pid))
        time.sleep(60)
        """,
        wall_s=1.5,
    )
    assert time.monotonic() - start < 10
    assert result.timed_out
    error = outcome_error(result, Limits(wall_s=1.5))
    assert error is not None and error.code == "time_limit_exceeded" and "1.5 s" in error.message
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_cancel_stops_the_child_promptly(tmp_path: Path) -> None:
    flag = tmp_path / "cancel"
    started = time.monotonic()
    result, progress = run_script(
        tmp_path,
        """
        import json, time
        print(json.dumps({"event": "progress", "stage": "capture", "fraction": 0.1}), flush=True)
        time.sleep(60)
        """,
        should_cancel=lambda: (flag.write_text("1") is not None) and time.monotonic() - started > 1.0,
    )
    assert result.cancelled
    assert progress == [("capture", 0.1)]
    assert time.monotonic() - started < 5


def test_cpu_limit_stops_a_busy_child() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from worker.runner import set_limits\nset_limits(0, 1)\nwhile True: pass"],
        timeout=30,
    )
    assert proc.returncode == -signal.SIGXCPU
    result = ChildResult(returncode=proc.returncode)
    error = outcome_error(result, Limits(wall_s=60, cpu_s=1))
    assert error is not None and error.code == "cpu_time_limit_exceeded"


def test_memory_limit_makes_allocation_fail_in_the_child() -> None:
    proc = subprocess.run(
        [sys.executable, "-c",
         "from worker.runner import set_limits\nset_limits(400, 0)\n"
         "try:\n    b = bytearray(2 * 1024**3)\nexcept MemoryError:\n    raise SystemExit(42)"],
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 42


def test_out_of_memory_is_recognised() -> None:
    assert _is_out_of_memory(MemoryError())
    assert _is_out_of_memory(RuntimeError("onnxruntime: Failed to allocate memory for requested buffer"))
    assert not _is_out_of_memory(ValueError("bad shape"))


def test_runner_reports_engine_errors_on_its_channel(tmp_path: Path) -> None:
    """The real runner on a model file that is not a model: an error event, no traceback on stdout."""
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    import numpy as np

    np.savez(tmp_path / "dataset.npz", x=np.zeros((4, 16), np.float32))
    (tmp_path / "config.json").write_text("{}")
    result, _ = run_script(
        tmp_path,
        f"""
        import sys
        from worker.runner import main
        sys.exit(main(["--model", "model.onnx", "--dataset", "dataset.npz", "--config", "config.json",
                       "--report", "report.json", "--memory-mb", "0", "--cpu-seconds", "60",
                       "--parent-pid", str({os.getpid()})]))
        """,
    )
    assert result.returncode == 2, result.stderr_tail
    assert result.error is not None and result.error.code.startswith("model_"), result.error
    assert not (tmp_path / "report.json").exists()
