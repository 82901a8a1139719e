"""The worker's own defences, with real analysis processes: TorchScript switched off is refused by
the worker and by the analysis process (whatever the job record says), and the analysis process
gets private copies of its inputs, never the stored bytes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from stored import store_artifact

from neuronscope.jobs import JobError
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from worker.child.environment import child_env
from worker.child.launch import MAX_ERROR_MESSAGE_CHARS, child_error, run_child
from worker.jobs.context import Confinement, WorkerContext
from worker.jobs.inputs import private_copy
from worker.jobs.run import run_job

SMALL = json.dumps({"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"})


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
        model=store_artifact(ctx, "model", torchscript_model, "torchscript"),
        dataset=store_artifact(ctx, "dataset", tiny_model.dataset, "npz"),
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
    dataset = store_artifact(ctx, "dataset", tiny_model.dataset, "npz")
    disguised = ctx.jobs.create(
        model=store_artifact(ctx, "model", torchscript_model, "onnx"), dataset=dataset, config=SMALL
    )
    model = store_artifact(ctx, "model", tiny_model.model, "onnx")
    onnx = ctx.jobs.create(model=model, dataset=dataset, config=SMALL)

    assert run_job(disguised.job_id, ctx) == "failed"
    failed = ctx.jobs.get(disguised.job_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code == "torchscript_disabled", failed.error
    assert run_job(onnx.job_id, ctx) == "succeeded"


def test_inputs_are_private_copies(settings: Settings, tiny_model: Any, tmp_path: Path) -> None:
    ctx = WorkerContext.of(settings)
    ref = store_artifact(ctx, "model", tiny_model.model, "onnx")
    copy = tmp_path / "model.onnx"
    private_copy(ctx.storage, "model", ref.id, copy)
    assert copy.stat().st_nlink == 1
    copy.write_bytes(b"overwritten by a hostile model")
    assert ctx.storage.artifact("model", ref.id) is not None
    assert isinstance(ctx.storage, FileSystemStorage)
    stored = ctx.storage.root / "artifacts" / "model" / ref.id[:2] / f"{ref.id}.bin"
    assert stored.read_bytes() == tiny_model.model.read_bytes()


def _failed_with(ctx: WorkerContext, job_id: str) -> str:
    record = ctx.jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None, record
    return record.error.code


def test_a_tampered_artifact_fails_the_job_and_is_never_analysed(settings: Settings, tiny_model: Any) -> None:
    ctx = WorkerContext.of(settings)
    model = store_artifact(ctx, "model", tiny_model.model, "onnx")
    dataset = store_artifact(ctx, "dataset", tiny_model.dataset, "npz")
    assert isinstance(ctx.storage, FileSystemStorage)
    stored = ctx.storage.root / "artifacts" / "dataset" / dataset.id[:2] / f"{dataset.id}.bin"
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-8] + b"tampered")
        record = ctx.jobs.create(model=model, dataset=dataset, config=SMALL)
        # "false" is no Python: reaching the analysis process would fail with another code.
        assert run_job(record.job_id, ctx, python="false") == "failed"
        assert _failed_with(ctx, record.job_id) == "artifact_tampered"
    finally:
        stored.write_bytes(original)
    again = ctx.jobs.create(model=model, dataset=dataset, config=SMALL)
    assert run_job(again.job_id, ctx) == "succeeded"


def test_models_that_are_code_are_refused_where_no_confinement_is_active(
    make_settings: Any, torchscript_model: Path, tiny_model: Any
) -> None:
    ctx = WorkerContext.of(make_settings(job_threads=1))
    ctx.confinement = Confinement(active=False, mechanism="no-landlock+seccomp", reason="no Landlock")
    dataset = store_artifact(ctx, "dataset", tiny_model.dataset, "npz")
    code = ctx.jobs.create(
        model=store_artifact(ctx, "model", torchscript_model, "torchscript"), dataset=dataset, config=SMALL
    )
    assert run_job(code.job_id, ctx, python="false") == "failed"
    assert _failed_with(ctx, code.job_id) == "sandbox_unavailable"
    onnx = ctx.jobs.create(
        model=store_artifact(ctx, "model", tiny_model.model, "onnx"), dataset=dataset, config=SMALL
    )
    assert run_job(onnx.job_id, ctx) == "succeeded"

    opted_in = WorkerContext.of(make_settings(job_threads=1, sandbox_allow_unconfined=True))
    opted_in.confinement = ctx.confinement
    allowed = opted_in.jobs.create(
        model=store_artifact(opted_in, "model", torchscript_model, "torchscript"),
        dataset=store_artifact(opted_in, "dataset", tiny_model.dataset, "npz"),
        config=SMALL,
    )
    assert run_job(allowed.job_id, opted_in) == "succeeded", opted_in.jobs.get(allowed.job_id)


def test_the_analysis_process_gets_an_allow_listed_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    planted = {
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "DATABASE_URL": "postgres://user:pw@db/x",
        "REDIS_URL": "redis://:pw@redis:6379/0",
        "NEURONSCOPE_API_KEYS": "k" * 20 + ":tenant",
        "SOME_TOKEN": "token",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONSTARTUP": "/tmp/evil.py",
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    env = child_env(tmp_path, threads=1)
    code = "import json, os, pathlib; pathlib.Path('env.json').write_text(json.dumps(dict(os.environ)))"
    result = run_child(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        wall_s=60,
        on_progress=lambda stage, fraction: None,
        should_cancel=lambda: False,
    )
    assert result.returncode == 0, result.stderr_tail
    seen = json.loads((tmp_path / "env.json").read_text())
    assert not set(planted) & set(seen), seen
    assert not any(value in json.dumps(seen) for value in planted.values())
    assert seen["TMPDIR"] == seen["HOME"] == str(tmp_path)


def test_errors_reported_by_the_analysis_process_are_bounded() -> None:
    error = child_error("dataset_shape_mismatch", "x" * 10_000 + "\x1b[2J\n")
    assert error.code == "dataset_shape_mismatch" and len(error.message) == MAX_ERROR_MESSAGE_CHARS
    assert child_error("not a code: /etc/passwd", "m").code == "internal_error"
    assert child_error(None, None) == JobError(code="internal_error", message="")
    assert "\x1b" not in child_error("c", "a\x1bb\nc").message
