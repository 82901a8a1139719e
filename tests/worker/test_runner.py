"""The analysis child process and its supervisor, with real processes: protocol, crashes, limits,
time-outs and cancellation (the fake children are small Python programs, the real one the runner)."""

from __future__ import annotations

import json
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
from worker.child.environment import child_env, worker_zygote
from worker.child.launch import ChildResult, Limits, outcome_error, run_child
from worker.child.runner import _is_out_of_memory

LIMITS = Limits(wall_s=60.0, cpu_s=30, memory_mb=512)


@pytest.fixture(params=["fork", "exec"])
def launch(request: pytest.FixtureRequest) -> str:
    """Each child test runs both ways: forked from the zygote (the default) and executed afresh."""
    return str(request.param)


def run_script(
    tmp_path: Path, script: str, launch: str = "exec", **kwargs: Any
) -> tuple[ChildResult, list[tuple[str, float]]]:
    progress: list[tuple[str, float]] = []
    options: dict[str, Any] = {"wall_s": 30.0, "should_cancel": lambda: False, "poll_s": 0.1} | kwargs
    code = ["-c", textwrap.dedent(script)]
    if launch == "fork":
        options["zygote"] = worker_zygote(1)
    result = run_child(
        code if launch == "fork" else [sys.executable, *code],
        cwd=tmp_path,
        env=child_env(tmp_path, threads=1),
        on_progress=lambda stage, fraction: progress.append((stage, fraction)),
        **options,
    )
    return result, progress


def test_protocol_lines_are_followed_and_other_output_ignored(tmp_path: Path, launch: str) -> None:
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
        launch=launch,
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
def test_a_crashing_child_fails_with_a_code(tmp_path: Path, launch: str, sig: int, code: str) -> None:
    result, _ = run_script(tmp_path, f"import os; os.kill(os.getpid(), {int(sig)})", launch)
    assert result.returncode == -sig
    error = outcome_error(result, LIMITS)
    assert error is not None and error.code == code


def test_an_error_event_wins_over_the_exit_status(tmp_path: Path, launch: str) -> None:
    result, _ = run_script(
        tmp_path,
        """
        import json, sys
        message = "x: expected [N, 16]"
        print(json.dumps({"event": "error", "code": "dataset_shape_mismatch", "message": message}))
        sys.exit(2)
        """,
        launch=launch,
    )
    assert outcome_error(result, LIMITS) == JobError(
        code="dataset_shape_mismatch", message="x: expected [N, 16]"
    )


def test_exit_without_report_is_a_crash(tmp_path: Path, launch: str) -> None:
    result, _ = run_script(tmp_path, "import sys; sys.exit(0)", launch)
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


def test_time_limit_kills_the_whole_process_group(tmp_path: Path, launch: str) -> None:
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
        launch=launch,
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


def test_cancel_stops_the_child_promptly(tmp_path: Path, launch: str) -> None:
    flag = tmp_path / "cancel"
    started = time.monotonic()
    result, progress = run_script(
        tmp_path,
        """
        import json, time
        print(json.dumps({"event": "progress", "stage": "capture", "fraction": 0.1}), flush=True)
        time.sleep(60)
        """,
        launch=launch,
        should_cancel=lambda: (flag.write_text("1") is not None) and time.monotonic() - started > 1.0,
    )
    assert result.cancelled
    assert progress == [("capture", 0.1)]
    assert time.monotonic() - started < 5


def test_cpu_limit_stops_a_busy_child() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from worker.child.runner import set_limits\nset_limits(0, 1)\nwhile True: pass",
        ],
        timeout=30,
    )
    assert proc.returncode == -signal.SIGXCPU
    result = ChildResult(returncode=proc.returncode)
    error = outcome_error(result, Limits(wall_s=60, cpu_s=1))
    assert error is not None and error.code == "cpu_time_limit_exceeded"


def test_memory_limit_makes_allocation_fail_in_the_child() -> None:
    proc = subprocess.run(
        [sys.executable, "-c",
         "from worker.child.runner import set_limits\nset_limits(400, 0)\n"
         "try:\n    b = bytearray(2 * 1024**3)\nexcept MemoryError:\n    raise SystemExit(42)"],
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 42


def test_out_of_memory_is_recognised() -> None:
    assert _is_out_of_memory(MemoryError())
    assert _is_out_of_memory(RuntimeError("onnxruntime: Failed to allocate memory for requested buffer"))
    assert not _is_out_of_memory(ValueError("bad shape"))


def test_runner_reports_engine_errors_on_its_channel(tmp_path: Path, launch: str) -> None:
    """The real runner on a model file that is not a model: an error event, no traceback on stdout."""
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    import numpy as np

    np.savez(tmp_path / "dataset.npz", x=np.zeros((4, 16), np.float32))
    (tmp_path / "config.json").write_text("{}")
    result, _ = run_script(
        tmp_path,
        """
        import os, sys
        from worker.child.runner import main
        sys.exit(main(["--model", "model.onnx", "--dataset", "dataset.npz", "--config", "config.json",
                       "--report", "report.json", "--memory-mb", "0", "--cpu-seconds", "60",
                       "--parent-pid", str(os.getppid())]))
        """,
        launch=launch,
    )
    assert result.returncode == 2, result.stderr_tail
    assert result.error is not None and result.error.code.startswith("model_"), result.error
    assert not (tmp_path / "report.json").exists()


FORKED_STATE = """
import ctypes, json, os, resource, sys, tempfile, threading
import torch
from worker.child.runner import set_limits

set_limits(400, 7)
death = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(death))  # PR_GET_PDEATHSIG
state = {
    "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
    "cwd": os.getcwd(), "tmpdir": os.environ.get("TMPDIR"), "gettempdir": tempfile.gettempdir(),
    "hidden": sorted(k for k in os.environ if k.startswith(("NEURONSCOPE_", "REDIS_"))),
    "preloaded": "worker.engine" in sys.modules, "torch_threads": torch.get_num_threads(),
    "deathsig": death.value, "core": resource.getrlimit(resource.RLIMIT_CORE),
    "cpu": resource.getrlimit(resource.RLIMIT_CPU), "threads": threading.active_count(),
}
try:
    bytearray(2 * 1024**3)
    state["allocated"] = True
except MemoryError:
    state["allocated"] = False
print(json.dumps(state), file=sys.stderr)
print(json.dumps({"event": "done"}))
"""


def test_a_forked_child_is_a_fresh_limited_analysis_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked from the zygote: its own session and group, death signal, limits, the job's
    directory, TMPDIR and thread count, no service settings in its environment."""
    monkeypatch.setenv("REDIS_URL", "redis://secret@example:6379/0")
    monkeypatch.setenv("NEURONSCOPE_DATA_DIR", "/somewhere/shared")
    result, _ = run_script(tmp_path, FORKED_STATE, "fork")
    assert result.returncode == 0 and result.done, result.stderr_tail
    state = json.loads(result.stderr_tail.strip().splitlines()[-1])
    assert state["pid"] == state["pgid"] == state["sid"]
    assert state["ppid"] == worker_zygote(1).pid and state["deathsig"] == signal.SIGKILL
    assert state["cwd"] == state["tmpdir"] == state["gettempdir"] == str(tmp_path.resolve())
    assert state["hidden"] == [] and state["preloaded"] and state["torch_threads"] == 1
    assert state["core"] == [0, 0] and state["cpu"] == [7, 12] and state["allocated"] is False
    assert state["threads"] == 1


def test_the_zygote_is_reused_so_a_second_child_starts_warm(tmp_path: Path) -> None:
    script = """
    import json, os, sys
    print(json.dumps({"ppid": os.getppid(), "preloaded": "worker.engine" in sys.modules}), file=sys.stderr)
    """
    seen = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        started = time.monotonic()
        result, _ = run_script(tmp_path / name, script, "fork")
        seen.append((json.loads(result.stderr_tail.strip().splitlines()[-1]), time.monotonic() - started))
    (first, _), (second, elapsed) = seen
    assert first["ppid"] == second["ppid"] == worker_zygote(1).pid
    assert second["preloaded"] and elapsed < 1.0


def test_a_dead_zygote_is_restarted_and_its_children_die_with_it(tmp_path: Path) -> None:
    zygote = worker_zygote(1)
    zygote.start()
    old = zygote.pid
    assert old is not None
    flag = tmp_path / "started"
    result, _ = run_script(
        tmp_path,
        f"""
        import json, os, signal, time
        open({str(flag)!r}, "w").write("1")
        os.kill(os.getppid(), signal.SIGKILL)  # the zygote dies under a running child
        time.sleep(30)
        """,
        "fork",
    )
    assert flag.exists() and result.returncode == -signal.SIGKILL
    error = outcome_error(result, LIMITS)
    assert error is not None and error.code == "analysis_killed"
    result, _ = run_script(tmp_path, "import json; print(json.dumps({'event': 'done'}))", "fork")
    assert result.returncode == 0 and result.done
    assert zygote.pid not in (None, old)
