"""An ONNX job under a small address-space limit (``NEURONSCOPE_JOB_MEMORY_LIMIT_MB``, applied as
``RLIMIT_AS`` in the analysis child): reading the model takes memory proportional to the file, not
to ``max_model_bytes``, so a 1 GiB limit runs a small model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from neuronscope.jobs import ArtifactRef
from neuronscope.storage import FileSystemStorage
from worker.jobs.context import WorkerContext
from worker.jobs.run import run_job

SMALL = '{"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"}'


def _store(ctx: WorkerContext, kind: Any, path: Path, fmt: Any) -> ArtifactRef:
    assert isinstance(ctx.storage, FileSystemStorage)
    with open(path, "rb") as f:
        staged = ctx.storage.stage(f, max_bytes=1 << 30)
    info, _ = ctx.storage.commit(staged, kind, fmt)
    return ArtifactRef(id=info.id, format=info.format)


def test_an_onnx_job_runs_under_a_one_gib_memory_limit(make_settings: Any, tiny_model: Any) -> None:
    ctx = WorkerContext.of(make_settings(job_memory_limit_mb=1024))
    record = ctx.jobs.create(
        model=_store(ctx, "model", tiny_model.model, "onnx"),
        dataset=_store(ctx, "dataset", tiny_model.dataset, "npz"),
        config=SMALL,
    )
    assert run_job(record.job_id, ctx) == "succeeded", ctx.jobs.get(record.job_id)


def test_parsing_a_model_reserves_memory_for_the_file_not_the_limit(tiny_model: Any) -> None:
    """Under a 1 GiB address-space limit, with the default 2 GiB ``max_model_bytes``."""
    code = textwrap.dedent(
        f"""
        import resource
        from neuronscope.validation import parse_onnx_file
        from neuronscope.validation.limits import DEFAULT_LIMITS
        assert DEFAULT_LIMITS.max_model_bytes > 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))
        model = parse_onnx_file({str(tiny_model.model)!r})
        print(len(model.graph.node))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) > 0
