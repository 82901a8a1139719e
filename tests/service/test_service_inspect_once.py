"""An upload is inspected once: the dataset's sample count is recorded when it is stored, and the
budget check and the job record (which the worker plans from) use the recorded count."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from api_testlib import npz_bytes
from fastapi.testclient import TestClient

from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from service.main import create_app


def test_the_sample_count_is_recorded_at_upload_and_reaches_the_job_record(
    client: TestClient, settings: Settings, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploaded = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(samples=37))})
    assert uploaded.status_code == 201, uploaded.text
    dataset_id = uploaded.json()["id"]
    storage = FileSystemStorage(settings.data_dir)
    info = storage.artifact("dataset", dataset_id)
    assert info is not None and info.samples == 37

    def no_second_inspection(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the dataset was inspected again")

    monkeypatch.setattr("service.api.routes.analyze.inspect_dataset", no_second_inspection)
    accepted = client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", onnx_bytes)},
        data={"dataset_id": dataset_id, "config": json.dumps({"pairs": [[0, 36]]})},
    )
    assert accepted.status_code == 202, accepted.text
    jobs = JobStore(connect(settings.require_redis_url()), prefix=settings.key_prefix)
    record = jobs.get(accepted.json()["job_id"])
    assert record is not None and record.dataset_samples == 37


def test_a_dataset_stored_before_counts_were_recorded_is_inspected_when_analysed(
    make_settings: Any, onnx_bytes: bytes
) -> None:
    settings: Settings = make_settings()
    with TestClient(create_app(settings)) as client:
        uploaded = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(samples=12))})
        dataset_id = uploaded.json()["id"]
        meta = Path(settings.data_dir) / "artifacts" / "dataset" / dataset_id[:2] / f"{dataset_id}.json"
        body = json.loads(meta.read_text())
        del body["samples"]
        meta.write_text(json.dumps(body))
        os.utime(meta)
        refused = client.post(
            "/v1/analyze",
            files={"model": ("m.onnx", onnx_bytes)},
            data={"dataset_id": dataset_id, "config": json.dumps({"pairs": [[0, 12]]})},
        )
        assert refused.status_code == 422, refused.text
        assert "12" in refused.json()["detail"]
