"""``neuronscope.confinement`` for real: a child process confines itself, then tries what a hostile
model would (each check runs in a fresh interpreter, since confinement cannot be undone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neuronscope.confinement import Paths, default_paths, exposing_root, landlock_abi, probe

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock")

ATTEMPTS = textwrap.dedent(
    """
    import ctypes, json, os, socket, sys
    from pathlib import Path
    from neuronscope.confinement import confine, default_paths

    work, outside, parent = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    report = confine(default_paths([work]))
    results = {"mechanism": report.describe()}

    def attempt(name, action):
        try:
            action()
            results[name] = "allowed"
        except OSError as exc:
            results[name] = f"refused: {exc.errno}"

    attempt("write inside", lambda: (work / "out.txt").write_text("ok"))
    attempt("read inside", lambda: (work / "out.txt").read_text())
    attempt("read outside", lambda: (outside / "secret.txt").read_bytes())
    attempt("write outside", lambda: (outside / "planted.txt").write_text("x"))
    attempt("read /etc/passwd", lambda: Path("/etc/passwd").read_bytes())
    attempt("list home", lambda: os.listdir(Path.home()))
    attempt("read the parent's environment", lambda: Path(f"/proc/{parent}/environ").read_bytes())
    attempt("tcp socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("udp socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    attempt("unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt("signal the parent", lambda: os.kill(parent, 0))
    libc = ctypes.CDLL(None, use_errno=True)

    def unshare():
        if libc.unshare(0x10000000 | 0x00020000) != 0:
            raise OSError(ctypes.get_errno(), "unshare")

    def ptrace():
        if libc.ptrace(16, parent, None, None) != 0:  # PTRACE_ATTACH
            raise OSError(ctypes.get_errno(), "ptrace")

    attempt("unshare a user and mount namespace", unshare)
    attempt("ptrace the parent", ptrace)
    import threading
    box = []
    thread = threading.Thread(target=lambda: box.append(sum(range(1000))))
    thread.start(); thread.join()
    results["threads"] = "ok" if box == [499500] else "broken"
    print(json.dumps(results))
    """
)


def _run_confined(tmp_path: Path) -> dict[str, str]:
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    done = subprocess.run(
        [sys.executable, "-c", ATTEMPTS, str(work), str(outside), str(os.getpid())],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SECRET_TOKEN": "do-not-read"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_confined_process_reads_and_writes_only_its_own_directory(tmp_path: Path) -> None:
    results = _run_confined(tmp_path)
    assert results["write inside"] == "allowed" and results["read inside"] == "allowed"
    assert results["threads"] == "ok"
    for attempt in ("read outside", "write outside", "read /etc/passwd", "list home"):
        assert results[attempt].startswith("refused"), (attempt, results)
    assert not (tmp_path / "outside" / "planted.txt").exists()


def test_a_confined_process_reaches_no_network_no_other_process_and_cannot_widen_its_confinement(
    tmp_path: Path,
) -> None:
    results = _run_confined(tmp_path)
    for attempt in (
        "tcp socket",
        "udp socket",
        "unix socket",
        "read the parent's environment",
        "signal the parent",
        "unshare a user and mount namespace",
        "ptrace the parent",
    ):
        assert results[attempt].startswith("refused"), (attempt, results)


def test_the_probe_confines_a_child_for_real() -> None:
    found = probe()
    assert found["active"] is True, found
    assert found["checks"] == {"read_outside_refused": True, "socket_refused": True}
    assert str(found["mechanism"]).startswith(f"landlock-abi{landlock_abi()}+seccomp")


def test_a_data_directory_inside_a_readable_root_is_found(tmp_path: Path) -> None:
    paths = Paths(read=(tmp_path / "venv",), write=(tmp_path / "job",))
    assert exposing_root(paths, tmp_path / "venv" / "data") == tmp_path / "venv"
    assert exposing_root(paths, tmp_path) == tmp_path / "venv"
    assert exposing_root(paths, tmp_path / "data") is None
    assert exposing_root(default_paths([tmp_path / "job"]), Path.home() / ".local/share/neuronscope") is None
