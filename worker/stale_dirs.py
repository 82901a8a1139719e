"""Private job directories that survive a killed attempt, and the start-up sweep that removes them.

Each attempt stages its job into ``{tmp}/neuronscope-{job_id[:8]}-XXXX/`` (:func:`job_workdir`) and
holds an exclusive ``flock`` on a lock file inside it for as long as it runs. The kernel drops the
lock when the holder dies, however it dies (``kill -9`` included), so a lock that can be taken marks
a directory nobody uses any more. Several workers may share one temporary directory: the sweep
(:func:`remove_stale_workdirs`) removes only directories whose lock it could take, and directories
with no lock file (made before this module, or whose lock file the model removed) only once they
are older than any attempt may run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("neuronscope.worker")

PREFIX = "neuronscope-"
LOCK_NAME = ".neuronscope-attempt.lock"
#: Age past which a job directory without a lock file is taken for abandoned.
UNLOCKED_MAX_AGE_S = 3600


@contextlib.contextmanager
def job_workdir(job_id: str, *, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A fresh private directory for one attempt at ``job_id``, locked while the block runs and
    removed after it."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{job_id[:8]}-", dir=tmp_dir))
    fd = -1
    try:
        # Locked under a temporary name, then renamed into place: a sweep never sees the lock
        # file unlocked while this attempt lives.
        pending = path / f"{LOCK_NAME}.{os.getpid()}"
        fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, path / LOCK_NAME)
        yield path
    finally:
        _remove_tree(path)
        if fd >= 0:
            os.close(fd)


def remove_stale_workdirs(
    tmp_dir: Path | None = None, *, unlocked_max_age_s: float = UNLOCKED_MAX_AGE_S
) -> list[Path]:
    """Remove the job directories in ``tmp_dir`` (default: the temporary directory) that no live
    attempt holds; returns what was removed."""
    root = Path(tmp_dir or tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(root.glob(f"{PREFIX}*"))
    except OSError as exc:
        log.warning("could not list %s for stale job directories: %s", root, exc)
        return []
    for path in candidates:
        if _is_own_directory(path) and _remove_if_stale(path, unlocked_max_age_s):
            removed.append(path)
    if removed:
        log.info("removed %d job directories left by killed attempts in %s", len(removed), root)
    return removed


def _is_own_directory(path: Path) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _remove_if_stale(path: Path, unlocked_max_age_s: float) -> bool:
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if time.time() - _mtime(path) < unlocked_max_age_s:
            return False  # being set up now, or an attempt from before lock files
        _remove_tree(path)
        return True
    except OSError:
        return False  # not ours to judge (a symlink, no permission)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live attempt holds it
        _remove_tree(path)
        return True
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _remove_tree(path: Path) -> None:
    """Remove ``path`` even where the model took the permissions off directories it made."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for parent, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(parent, name)
            if not os.path.islink(child):  # never follow a link out of the directory
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)
    shutil.rmtree(path, ignore_errors=True)
