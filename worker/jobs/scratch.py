"""A split job's intermediate files, in the storage directory every worker shares.

``{data_dir}/work/{job_id}/`` holds the plan, the prepare stage's outputs and each chunk's result
until the merge stage has stored the report. Files are published once (written to a temporary
name, then hard-linked into place, which fails rather than overwrite), so a redelivered task that
finds its output already there can skip its work. Only the split's start creates the directory:
a late copy of a chunk that finishes after the job ended and its directory was removed finds it
gone (:class:`ScratchGone`) instead of leaving a new one behind. Analysis processes never see this
directory: they get private copies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from neuronscope.jobs import is_job_id
from neuronscope.settings import Settings


class ScratchGone(FileNotFoundError):
    """The job's directory is gone: the job ended and its files were removed."""


class JobScratch:
    def __init__(self, settings: Settings, job_id: str) -> None:
        if not is_job_id(job_id):
            raise ValueError(f"expected a job id (UUID4), got {job_id!r}")
        self.root = settings.data_dir / "work" / job_id

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"expected a plain file name, got {name!r}")
        return self.root / name

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def create(self) -> None:
        """Make the job's directory (the split's start; nothing else creates it)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise ScratchGone(f"the split job's directory {self.root} is gone: the job is over")

    def put(self, name: str, source: Path) -> bool:
        """Publish a copy of ``source`` as ``name``; ``False`` when it was already there.

        Raises:
            ScratchGone: the job's directory was removed (the job is over)."""
        target = self.path(name)
        if target.exists():
            return False
        self._require_root()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".part-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def mark(self, name: str) -> None:
        """Publish an empty marker file (``ScratchGone`` when the job's directory was removed)."""
        self._require_root()
        with contextlib.suppress(FileExistsError):
            self.path(name).touch(exist_ok=False)

    def get(self, name: str, dest: Path) -> None:
        """Copy ``name`` to ``dest`` (a copy of its own, never a link); FileNotFoundError if absent."""
        shutil.copyfile(self.path(name), dest)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
