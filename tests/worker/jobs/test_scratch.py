"""A split job's shared directory: published once, and never brought back once the job removed it
(a late copy of a chunk must not leave files of a finished job behind)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from neuronscope.settings import Settings
from worker.jobs.scratch import JobScratch, ScratchGone


def _scratch(tmp_path: Path) -> JobScratch:
    return JobScratch(Settings(data_dir=tmp_path), str(uuid.uuid4()))


def test_files_are_published_once(tmp_path: Path) -> None:
    scratch = _scratch(tmp_path)
    scratch.create()
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("first")
    second.write_text("second")
    assert scratch.put("result.npz", first)
    assert not scratch.put("result.npz", second)
    assert scratch.path("result.npz").read_text() == "first"
    assert [p.name for p in scratch.root.iterdir()] == ["result.npz"]


def test_a_removed_directory_is_not_recreated(tmp_path: Path) -> None:
    scratch = _scratch(tmp_path)
    scratch.create()
    source = tmp_path / "late"
    source.write_text("a chunk that finished after the merge")
    scratch.remove()
    with pytest.raises(ScratchGone, match="is gone"):
        scratch.put("chunk-td-1.npz", source)
    with pytest.raises(ScratchGone):
        scratch.mark("dispatched")
    assert not scratch.root.exists()
