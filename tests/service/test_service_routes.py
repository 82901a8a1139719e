"""The HTTP API against a real Redis (no worker): uploads, queueing, jobs, reports, errors."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import numpy as np
import pytest
from api_testlib import assert_error, queued_messages
from fastapi.testclient import TestClient

from neuronscope.contracts import Report
from neuronscope.jobs import ArtifactRef, JobStore
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from service.main import create_app

SMALL_TD = {"transition_density": {"pairs": {"count": 4}, "points": 16}}


def submit(client: TestClient, onnx: bytes, dataset: bytes, config: dict[str, Any] | None = None) -> Any:
    data = {"config": json.dumps(config)} if config is not None else {}
    return client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", onnx, "application/octet-stream"), "dataset": ("d.npz", dataset)},
        data=data,
    )


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_without_a_worker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert_error(response, 503, "not_ready")
    assert response.headers["Retry-After"]


def test_model_upload_is_content_addressed(client: TestClient, onnx_bytes: bytes) -> None:
    first = client.post("/v1/models", files={"file": ("a.onnx", onnx_bytes)})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body == {"id": hashlib.sha256(onnx_bytes).hexdigest(), "kind": "model", "format": "onnx",
                    "size": len(onnx_bytes)}  # fmt: skip
    again = client.post("/v1/models", files={"file": ("other-name.bin", onnx_bytes)})
    assert again.status_code == 200
    assert again.json() == body
    assert client.get(f"/v1/models/{body['id']}").json() == body
    assert_error(client.get(f"/v1/datasets/{body['id']}"), 404, "artifact_not_found")


def test_dataset_formats(client: TestClient, dataset_bytes: bytes) -> None:
    npz = client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes)})
    assert npz.status_code == 201 and npz.json()["format"] == "npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 16), dtype=np.float32))
    npy = client.post("/v1/datasets", files={"file": ("d.npy", buf.getvalue())})
    assert npy.status_code == 201 and npy.json()["format"] == "npy"


@pytest.mark.parametrize("payload", [b"", b"certainly not numpy", b"PK\x03\x04 truncated zip"])
def test_bad_dataset_is_422(client: TestClient, settings: Settings, payload: bytes) -> None:
    body = assert_error(
        client.post("/v1/datasets", files={"file": ("d.npz", payload)}), 422, "dataset_invalid"
    )
    assert "dataset" in body["detail"]
    assert not list((settings.data_dir / "artifacts" / "dataset").rglob("*.bin"))
    assert not list((settings.data_dir / "tmp").iterdir())


def test_garbage_model_is_422(client: TestClient) -> None:
    assert_error(
        client.post("/v1/models", files={"file": ("m.onnx", b"\x00\x01garbage" * 10)}), 422, "model_invalid"
    )


def test_upload_limit_is_413(make_settings: Any) -> None:
    settings = make_settings(max_upload_mb=1)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/datasets", files={"file": ("d.npy", b"\x93NUMPY" + b"\0" * (1024 * 1024 + 1))}
        )
    assert_error(response, 413, "payload_too_large")
    assert not list((settings.data_dir / "tmp").iterdir())


def test_torchscript_can_be_switched_off(make_settings: Any, tmp_path: Any) -> None:
    import zipfile

    archive = tmp_path / "m.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/code/__torch__/m.py", "def forward(self): pass\n")
        zf.writestr("m/data.pkl", b"\x80\x02}q\x00.")
    with TestClient(create_app(make_settings(allow_torchscript=False))) as client:
        response = client.post("/v1/models", files={"file": ("m.pt", archive.read_bytes())})
    assert_error(response, 422, "torchscript_disabled")


def test_a_pt2_upload_is_recognised_by_content_and_switched_off_with_torchscript(
    make_settings: Any, tmp_path: Any
) -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    archive = tmp_path / "m.bin"
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), str(archive))
    with TestClient(create_app(make_settings(sandbox_allow_unconfined=True))) as client:
        response = client.post("/v1/models", files={"file": ("m.onnx", archive.read_bytes())})
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "pt2"
    with TestClient(create_app(make_settings(allow_torchscript=False))) as client:
        response = client.post("/v1/models", files={"file": ("m.pt2", archive.read_bytes())})
    assert_error(response, 422, "torchscript_disabled")
    assert ".pt2" in response.json()["detail"]


def test_analyze_stores_records_then_queues_by_name(
    client: TestClient, settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    response = submit(client, onnx_bytes, dataset_bytes, SMALL_TD)
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert uuid.UUID(job_id).version == 4
    assert body == {
        "job_id": job_id,
        "status": "queued",
        "status_url": f"/v1/jobs/{job_id}",
        "report_url": f"/v1/jobs/{job_id}/report",
        "html_report_url": f"/v1/jobs/{job_id}/report.html",
    }
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    assert queued_messages(settings) == [{"task": "analysis.run", "args": [], "kwargs": {"job_id": job_id}}]

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued"
    assert job["progress"] == {"stage": "queued", "fraction": 0.0}
    assert job["model_id"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert job["dataset_id"] == hashlib.sha256(dataset_bytes).hexdigest()
    assert job["started_at"] is None and job["finished_at"] is None and job["error"] is None
    assert job["created_at"].endswith(("Z", "+00:00"))
    assert job["report_url"] == f"/v1/jobs/{job_id}/report"


def test_analyze_by_ids_reuses_uploads(
    client: TestClient, settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    model_id = client.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}).json()["id"]
    dataset_id = client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes)}).json()["id"]
    for _ in range(2):
        response = client.post("/v1/analyze", data={"model_id": model_id, "dataset_id": dataset_id})
        assert response.status_code == 202, response.text
    assert len(queued_messages(settings)) == 2
    jobs = client.get("/v1/jobs").json()["jobs"]
    assert {(j["model_id"], j["dataset_id"]) for j in jobs} == {(model_id, dataset_id)}


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        json.dumps({"unknown_key": 1}),
        json.dumps({"dying_threshold": 2}),
        json.dumps({"breakpoints": {"relu": [1.0, 0.0]}}),
    ],
)
def test_invalid_config_queues_nothing(
    client: TestClient, settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes, config: str
) -> None:
    response = client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)},
        data={"config": config},
    )
    body = assert_error(response, 422, "invalid_config")
    assert body["detail"].startswith("config:")
    assert queued_messages(settings) == []
    assert client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}
    assert not list((settings.data_dir / "artifacts").rglob("*.bin"))


def test_analyze_needs_exactly_one_model_and_dataset(
    client: TestClient, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    assert_error(
        client.post("/v1/analyze", files={"dataset": ("d.npz", dataset_bytes)}), 422, "invalid_request"
    )
    both = client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)},
        data={"model_id": "0" * 64},
    )
    assert "both" in assert_error(both, 422, "invalid_request")["detail"]
    unknown = client.post(
        "/v1/analyze", files={"dataset": ("d.npz", dataset_bytes)}, data={"model_id": "a" * 64}
    )
    assert "POST /v1/models" in assert_error(unknown, 404, "artifact_not_found")["detail"]


@pytest.mark.parametrize(
    "job_id",
    ["5f0c7a52-3b1e-4d2a-9c47-1e8f6b2d9a30", "not-a-uuid", "12345", "A3C1E9D4-7B2F-4E6A-8D10-5C9B2E7F4A61"],
)
def test_unknown_job_is_404(client: TestClient, job_id: str) -> None:
    assert_error(client.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
    assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "job_not_found")
    assert_error(client.delete(f"/v1/jobs/{job_id}"), 404, "job_not_found")


def _create_jobs(store: JobStore, n: int) -> list[str]:
    ref = ArtifactRef(id="a" * 64, format="onnx")
    return [
        store.create(model=ref, dataset=ArtifactRef(id="b" * 64, format="npz"), config="{}").job_id
        for _ in range(n)
    ]


def test_list_jobs_newest_first_with_cursor(client: TestClient, job_store: JobStore) -> None:
    created = _create_jobs(job_store, 5)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/jobs", params=params).json()
        seen += [j["job_id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]
    assert pages == 3
    assert_error(client.get("/v1/jobs", params={"cursor": "garbage"}), 422, "invalid_cursor")
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")


def test_cancel_queued_job(client: TestClient, job_store: JobStore) -> None:
    (job_id,) = _create_jobs(job_store, 1)
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["error"]["code"] == "cancelled"
    assert body["finished_at"] is not None
    assert_error(client.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")
    assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "report_not_ready")


def test_report_404_until_it_exists(
    client: TestClient, job_store: JobStore, storage: FileSystemStorage, report: Report
) -> None:
    (job_id,) = _create_jobs(job_store, 1)
    body = assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "report_not_ready")
    assert "queued" in body["detail"]
    job_store.start(job_id, max_attempts=3)
    job_store.set_progress(job_id, "capture", 0.25)
    assert (
        "capture" in assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "report_not_ready")["detail"]
    )
    assert storage.put_report(job_id, report.to_json().encode())
    job_store.finish(job_id, "succeeded")

    response = client.get(f"/v1/jobs/{job_id}/report")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert Report.model_validate_json(response.content) == report
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == {"stage": "done", "fraction": 1.0}
    assert_error(client.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")

    html = client.get(f"/v1/jobs/{job_id}/report.html")
    if html.status_code == 501:
        assert_error(html, 501, "not_implemented")
    else:
        assert html.status_code == 200, html.text
        assert html.headers["content-type"].startswith("text/html")
        assert "<html" in html.text.lower()


def test_unknown_route_and_method_use_the_error_body(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.put("/v1/jobs"), 405, "method_not_allowed")


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    # Found by the schemathesis run: Starlette listed only the first matching route's methods.
    response = client.put(f"/v1/jobs/{uuid.uuid4()}")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "DELETE, GET, HEAD"
    assert client.request("OPTIONS", "/v1/analyze").headers["Allow"] == "POST"


def test_a_malformed_multipart_body_is_400(client: TestClient) -> None:
    # Found by the schemathesis run: an undocumented 400 with the generic "http_error" code.
    response = client.post(
        "/v1/analyze",
        content=b"--b\r\nFalse--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_error(response, 400, "malformed_body")


def test_redis_down_is_503_and_leaves_no_job(
    make_settings: Any, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(create_app(settings)) as client:
        response = submit(client, onnx_bytes, dataset_bytes)
        assert_error(response, 503, "redis_unavailable")
        assert int(response.headers["Retry-After"]) > 0
        assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}"), 503, "redis_unavailable")
        assert_error(client.get("/readyz"), 503, "not_ready")
