"""The worker's own defences, with real analysis processes: TorchScript switched off is refused by
the worker and by the analysis process (whatever the job record says), and the analysis process
gets private copies of its inputs, never the stored bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from neuronscope.jobs import ArtifactRef
from neuronscope.settings import Settings
from neuronscope.storage import ArtifactFormat, ArtifactKind, FileSystemStorage
from worker.sandbox import WorkerContext, private_copy, run_job

SMALL = json.dumps({"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"})


def _store(ctx: WorkerContext, kind: ArtifactKind, path: Path, fmt: ArtifactFormat) -> ArtifactRef:
    assert isinstance(ctx.storage, FileSystemStorage)
    with open(path, "rb") as f:
        staged = ctx.storage.stage(f, max_bytes=1 << 30)
    info, _ = ctx.storage.commit(staged, kind, fmt)
    return ArtifactRef(id=info.id, format=info.format)


@pytest.fixture(scope="module")
def torchscript_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from torch import nn

    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return path


@pytest.fixture
def no_torchscript(make_settings: Any) -> WorkerContext:
    settings: Settings = make_settings(allow_torchscript=False, job_threads=1)
    return WorkerContext.of(settings)


def test_the_worker_refuses_a_torchscript_job_when_switched_off(
    no_torchscript: WorkerContext, torchscript_model: Path, tiny_model: Any
) -> None:
    ctx = no_torchscript
    record = ctx.jobs.create(
        model=_store(ctx, "model", torchscript_model, "torchscript"),
        dataset=_store(ctx, "dataset", tiny_model.dataset, "npz"),
        config=SMALL,
    )
    # "false" is no Python: the job must fail before any analysis process starts.
    assert run_job(record.job_id, ctx, python="false") == "failed"
    failed = ctx.jobs.get(record.job_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code == "torchscript_disabled"


def test_the_analysis_process_refuses_torchscript_content_whatever_the_record_says(
    no_torchscript: WorkerContext, torchscript_model: Path, tiny_model: Any
) -> None:
    """A TorchScript archive stored as if it were ONNX (a record or storage that was tampered
    with) is refused by content in the analysis process; ONNX models still run."""
    ctx = no_torchscript
    dataset = _store(ctx, "dataset", tiny_model.dataset, "npz")
    disguised = ctx.jobs.create(
        model=_store(ctx, "model", torchscript_model, "onnx"), dataset=dataset, config=SMALL
    )
    model = _store(ctx, "model", tiny_model.model, "onnx")
    onnx = ctx.jobs.create(model=model, dataset=dataset, config=SMALL)

    assert run_job(disguised.job_id, ctx) == "failed"
    failed = ctx.jobs.get(disguised.job_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code == "torchscript_disabled", failed.error
    assert run_job(onnx.job_id, ctx) == "succeeded"


def test_inputs_are_private_copies(settings: Settings, tiny_model: Any, tmp_path: Path) -> None:
    ctx = WorkerContext.of(settings)
    ref = _store(ctx, "model", tiny_model.model, "onnx")
    copy = tmp_path / "model.onnx"
    private_copy(ctx.storage, "model", ref.id, copy)
    assert copy.stat().st_nlink == 1
    copy.write_bytes(b"overwritten by a hostile model")
    assert ctx.storage.artifact("model", ref.id) is not None
    assert isinstance(ctx.storage, FileSystemStorage)
    stored = ctx.storage.root / "artifacts" / "model" / ref.id[:2] / f"{ref.id}.bin"
    assert stored.read_bytes() == tiny_model.model.read_bytes()
