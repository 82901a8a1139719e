"""A worker's pool process starts its zygote (the pre-imported analysis launcher) before any job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _descendants_running(root: int, needle: str) -> list[int]:
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            stack.append(child)
            if needle in commands.get(child, ""):
                found.append(child)
    return found


def test_the_zygote_is_up_before_the_first_job(
    make_settings: Any, worker_factory: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    with worker_factory(settings, tmp_path / "worker.log") as worker:
        deadline = time.monotonic() + 30
        zygotes = _descendants_running(worker.proc.pid, "worker.child.zygote")
        while not zygotes and time.monotonic() < deadline:
            time.sleep(0.2)
            zygotes = _descendants_running(worker.proc.pid, "worker.child.zygote")
        assert zygotes, f"no zygote under the worker before any job:\n{worker.log_text()[-2000:]}"
