"""Retention through the app on a real Redis: owners delete uploads and reports (another tenant's
ids stay indistinguishable from unknown ones), uploads and reports expire, a tenant's storage
quota and a full disk are 507, and a stored report that was tampered with is never served."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from api_testlib import ALICE_KEY, BOB_KEY, assert_error, auth
from fastapi.testclient import TestClient

from neuronscope.contracts import Report
from neuronscope.jobs import JobStore, connect
from neuronscope.ownership import ArtifactOwnership
from neuronscope.retention import sweep_expired
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage, StorageFull
from service.main import create_app

KEYS = {ALICE_KEY: "alice", BOB_KEY: "bob"}
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def keyed_settings(make_settings: Any) -> Settings:
    settings: Settings = make_settings(api_keys=KEYS)
    return settings


@pytest.fixture
def api(keyed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings)) as client:
        yield client


@pytest.fixture
def ownership(keyed_settings: Settings) -> Iterator[ArtifactOwnership]:
    client = connect(keyed_settings.require_redis_url())
    yield ArtifactOwnership(client, prefix=keyed_settings.key_prefix)
    client.close()


def _upload(api: TestClient, kind: str, data: bytes, key: str) -> Any:
    name = "m.onnx" if kind == "models" else "d.npy"
    return api.post(f"/v1/{kind}", files={"file": (name, data)}, headers=auth(key))


def _unknown(api: TestClient, method: str, path: str, real_id: str, key: str) -> dict[str, Any]:
    fresh = str(uuid.uuid4()) if len(real_id) == 36 else uuid.uuid4().hex * 2
    response = api.request(method, path.replace(real_id, fresh), headers=auth(key))
    return {
        "status": response.status_code,
        **response.json(),
        "detail": response.json()["detail"].replace(fresh, real_id),
    }


def _answer(response: Any) -> dict[str, Any]:
    return {"status": response.status_code, **response.json()}


def npy(samples: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).normal(size=(samples, 16)).astype(np.float32))
    return buf.getvalue()


# -- deletion by the owner ----------------------------------------------------------------------


def test_owner_deletes_an_upload_and_its_bytes_go_with_the_last_owner(
    api: TestClient, keyed_settings: Settings, onnx_bytes: bytes
) -> None:
    model_id = _upload(api, "models", onnx_bytes, ALICE_KEY).json()["id"]
    dataset_id = _upload(api, "datasets", npy(8, 0), ALICE_KEY).json()["id"]
    bin_path = keyed_settings.data_dir / "artifacts" / "model" / model_id[:2] / f"{model_id}.bin"
    assert _upload(api, "models", onnx_bytes, BOB_KEY).status_code == 201  # the same bytes, bob's too

    # Bob cannot delete (or learn of) alice's dataset: the same answer as for an unknown id.
    path = f"/v1/datasets/{dataset_id}"
    refused = api.delete(path, headers=auth(BOB_KEY))
    assert_error(refused, 404, "artifact_not_found")
    assert _answer(refused) == _unknown(api, "DELETE", path, dataset_id, BOB_KEY)
    assert api.get(path, headers=auth(ALICE_KEY)).status_code == 200

    # Alice's delete takes the model from her; bob still has it, so the bytes stay.
    deleted = api.delete(f"/v1/models/{model_id}", headers=auth(ALICE_KEY))
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(api.get(f"/v1/models/{model_id}", headers=auth(ALICE_KEY)), 404, "artifact_not_found")
    assert_error(api.delete(f"/v1/models/{model_id}", headers=auth(ALICE_KEY)), 404, "artifact_not_found")
    by_ids = {"model_id": model_id, "dataset_id": dataset_id}
    assert_error(api.post("/v1/analyze", data=by_ids, headers=auth(ALICE_KEY)), 404, "artifact_not_found")
    assert api.get(f"/v1/models/{model_id}", headers=auth(BOB_KEY)).status_code == 200
    assert bin_path.exists()

    # The last owner's delete removes the bytes.
    assert api.delete(f"/v1/models/{model_id}", headers=auth(BOB_KEY)).status_code == 204
    assert not bin_path.exists() and not bin_path.with_suffix(".json").exists()
    assert api.delete(path, headers=auth(ALICE_KEY)).status_code == 204
    assert list((keyed_settings.data_dir / "artifacts").rglob("*.bin")) == []


def _succeeded_job(api: TestClient, settings: Settings, report: Report, onnx: bytes) -> str:
    files = {"model": ("m.onnx", onnx), "dataset": ("d.npy", npy(8, 1))}
    job_id = str(api.post("/v1/analyze", files=files, headers=auth(ALICE_KEY)).json()["job_id"])
    client = connect(settings.require_redis_url())
    store = JobStore(client, prefix=settings.key_prefix)
    store.start(job_id, max_attempts=3)
    FileSystemStorage(settings.data_dir).put_report(job_id, report.to_json().encode())
    store.finish(job_id, "succeeded")
    client.close()
    return job_id


def test_owner_deletes_a_report(
    api: TestClient, keyed_settings: Settings, report: Report, onnx_bytes: bytes
) -> None:
    job_id = _succeeded_job(api, keyed_settings, report, onnx_bytes)
    path = f"/v1/jobs/{job_id}/report"
    refused = api.delete(path, headers=auth(BOB_KEY))
    assert_error(refused, 404, "job_not_found")
    assert _answer(refused) == _unknown(api, "DELETE", path, job_id, BOB_KEY)
    assert api.get(path, headers=auth(ALICE_KEY)).status_code == 200

    assert api.delete(path, headers=auth(ALICE_KEY)).status_code == 204
    assert not (keyed_settings.data_dir / "reports" / f"{job_id}.json").exists()
    body = assert_error(api.get(path, headers=auth(ALICE_KEY)), 404, "report_not_ready")
    assert "deleted" in body["detail"]
    assert_error(api.delete(path, headers=auth(ALICE_KEY)), 404, "report_not_ready")
    assert api.get(f"/v1/jobs/{job_id}", headers=auth(ALICE_KEY)).json()["status"] == "succeeded"


# -- a stored report is validated before it is served -------------------------------------------


@pytest.mark.parametrize(
    "tampered",
    [b'{"secret": "first bytes of /etc/passwd: root:x:0:0"}', b"\x00" * 64, b"", b'{"schema_version": "1.0"'],
    ids=["other-json", "binary", "empty", "truncated"],
)
def test_a_tampered_stored_report_is_never_served(
    api: TestClient, keyed_settings: Settings, report: Report, onnx_bytes: bytes, tampered: bytes
) -> None:
    job_id = _succeeded_job(api, keyed_settings, report, onnx_bytes)
    (keyed_settings.data_dir / "reports" / f"{job_id}.json").write_bytes(tampered)
    for suffix in ("/report", "/report.html"):
        response = api.get(f"/v1/jobs/{job_id}{suffix}", headers=auth(ALICE_KEY))
        body = assert_error(response, 500, "report_corrupt")
        assert "corrupt" in body["detail"] and "passwd" not in response.text


# -- TTL ----------------------------------------------------------------------------------------


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_the_sweep_removes_uploads_and_reports_past_their_ttl(
    api: TestClient, keyed_settings: Settings, ownership: ArtifactOwnership, report: Report, onnx_bytes: bytes
) -> None:
    storage = FileSystemStorage(keyed_settings.data_dir)
    old = _upload(api, "datasets", npy(8, 2), ALICE_KEY).json()["id"]
    again = _upload(api, "datasets", npy(8, 3), ALICE_KEY).json()["id"]
    assert _upload(api, "datasets", npy(8, 2), BOB_KEY).status_code == 201
    job_id = _succeeded_job(api, keyed_settings, report, onnx_bytes)
    artifacts = keyed_settings.data_dir / "artifacts" / "dataset"
    for artifact_id in (old, again):
        _age(artifacts / artifact_id[:2] / f"{artifact_id}.bin", 2 * 3600)
    _age(keyed_settings.data_dir / "reports" / f"{job_id}.json", 2 * 3600)
    # Uploading the same bytes again starts the upload's time to live over.
    assert _upload(api, "datasets", npy(8, 3), BOB_KEY).status_code == 201
    # What a killed API process was staging goes too; what is being written now stays.
    abandoned, writing = storage.root / "tmp" / "upload-killed", storage.root / "tmp" / "upload-live"
    abandoned.write_bytes(b"x" * 1000)
    writing.write_bytes(b"x" * 1000)
    _age(abandoned, 2 * 24 * 3600)

    result = sweep_expired(storage, ownership, artifact_ttl_s=3600, report_ttl_s=3600)
    assert (result.artifacts, result.reports, result.staged) == (1, 1, 1)
    assert not abandoned.exists() and writing.exists()
    for key in (ALICE_KEY, BOB_KEY):
        assert_error(api.get(f"/v1/datasets/{old}", headers=auth(key)), 404, "artifact_not_found")
    assert api.get(f"/v1/datasets/{again}", headers=auth(ALICE_KEY)).status_code == 200
    assert not ownership.owns("bob", "dataset", old)
    assert_error(api.get(f"/v1/jobs/{job_id}/report", headers=auth(ALICE_KEY)), 404, "report_not_ready")
    # TTL 0 keeps everything.
    assert sweep_expired(storage, ownership, artifact_ttl_s=0, report_ttl_s=0).artifacts == 0


# -- storage quota ------------------------------------------------------------------------------


def test_an_upload_past_the_tenants_quota_is_507_and_stores_nothing(make_settings: Any) -> None:
    settings: Settings = make_settings(api_keys=KEYS, tenant_quota_mb=1)
    first, second, third = npy(6400, 10), npy(6400, 11), npy(6400, 12)  # 400 KiB (+ header) each
    with TestClient(create_app(settings)) as api:
        assert _upload(api, "datasets", first, ALICE_KEY).status_code == 201
        assert _upload(api, "datasets", second, ALICE_KEY).status_code == 201
        refused = _upload(api, "datasets", third, ALICE_KEY)
        body = assert_error(refused, 507, "storage_quota_exceeded")
        assert "1 MiB" in body["detail"] and "NEURONSCOPE_TENANT_QUOTA_MB" in body["detail"]
        assert "0.78 MiB stored" in body["detail"]
        stored = list((settings.data_dir / "artifacts").rglob("*.bin"))
        assert len(stored) == 2 and list((settings.data_dir / "tmp").iterdir()) == []
        # Another tenant has a quota of its own; deleting makes room.
        assert _upload(api, "datasets", third, BOB_KEY).status_code == 201
        first_id = hashlib.sha256(first).hexdigest()
        assert api.delete(f"/v1/datasets/{first_id}", headers=auth(ALICE_KEY)).status_code == 204
        assert _upload(api, "datasets", third, ALICE_KEY).status_code == 201


# -- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage's temporary files are ``/dev/full``: every write to them fails with a real ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")

    def mkstemp(dir: str | Path | None = None, prefix: str | None = None) -> tuple[int, str]:
        fd, name = tempfile.mkstemp(dir=dir, prefix=prefix)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr("neuronscope.storage.tempfile", SimpleNamespace(mkstemp=mkstemp))


@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_fails_storage_with_storage_full(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
    with pytest.raises(StorageFull, match="no space left"):
        storage.stage(io.BytesIO(b"x" * 100_000), max_bytes=1 << 20)
    with pytest.raises(StorageFull):
        storage.put_report(str(uuid.uuid4()), b"{}")
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "reports").iterdir()) == []


@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_is_507_not_500(api: TestClient, keyed_settings: Settings, onnx_bytes: bytes) -> None:
    for response in (
        _upload(api, "models", onnx_bytes, ALICE_KEY),
        api.post(
            "/v1/analyze",
            files={"model": ("m.onnx", onnx_bytes), "dataset": ("d.npy", npy(8, 0))},
            headers=auth(ALICE_KEY),
        ),
    ):
        body = assert_error(response, 507, "insufficient_storage")
        assert "no space left" in body["detail"] and str(keyed_settings.data_dir) not in body["detail"]
    assert list((keyed_settings.data_dir / "artifacts").rglob("*.bin")) == []
    assert list((keyed_settings.data_dir / "tmp").iterdir()) == []


# -- the quota against a real server, attacked with parallel uploads ----------------------------


@pytest.fixture
def quota_server(make_settings: Any, tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    """A real uvicorn server on a loopback port, with a 1 MiB quota per tenant."""
    settings: Settings = make_settings(api_keys=KEYS, tenant_quota_mb=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONSCOPE_", "REDIS_"))}
    env |= settings.to_env() | {"PYTHONPATH": str(ROOT)}
    port = free_port()
    with open(tmp_path / "uvicorn.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "uvicorn.log").read_text()
            time.sleep(0.1)
        yield url, settings
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_parallel_uploads_cannot_slip_past_the_quota(quota_server: tuple[str, Settings]) -> None:
    url, settings = quota_server
    uploads = [npy(6400, 100 + n) for n in range(8)]  # 8 × 400 KiB against a 1 MiB quota

    def post(data: bytes) -> httpx.Response:
        files = {"file": ("d.npy", data)}
        return httpx.post(f"{url}/v1/datasets", files=files, headers=auth(ALICE_KEY), timeout=60)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, uploads))
    # Bytes in flight count too, so a burst may be refused whole; it never gets past the quota.
    assert sorted({r.status_code for r in responses}) in ([507], [201, 507]), responses
    assert [r.status_code for r in responses].count(201) <= 2
    for response in responses:
        if response.status_code == 507:
            assert_error(response, 507, "storage_quota_exceeded")
    # One at a time after the burst: exactly two fit in all.
    for data in uploads:
        if post(data).status_code == 507:
            break
    stored = [p.stat().st_size for p in (settings.data_dir / "artifacts").rglob("*.bin")]
    assert len(stored) == 2 and sum(stored) <= 1024 * 1024
    assert list((settings.data_dir / "tmp").iterdir()) == []
    client = connect(settings.require_redis_url())
    owner = ArtifactOwnership(client, prefix=settings.key_prefix)
    assert owner.in_flight("alice") == 0  # every refused upload gave its bytes back
    client.close()


def test_files_sent_inline_to_analyze_count_against_the_quota(make_settings: Any, tiny_model: Any) -> None:
    settings: Settings = make_settings(api_keys=KEYS, tenant_quota_mb=1)
    with TestClient(create_app(settings)) as api:
        assert _upload(api, "datasets", npy(6400, 20), ALICE_KEY).status_code == 201
        assert _upload(api, "datasets", npy(6400, 21), ALICE_KEY).status_code == 201
        refused = api.post(
            "/v1/analyze",
            files={"model": ("m.onnx", tiny_model.model.read_bytes()), "dataset": ("d.npy", npy(6400, 22))},
            headers=auth(ALICE_KEY),
        )
        assert_error(refused, 507, "storage_quota_exceeded")
        assert api.get("/v1/jobs", headers=auth(ALICE_KEY)).json()["jobs"] == []
