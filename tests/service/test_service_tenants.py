"""API keys and tenants against a real Redis: every /v1 route needs a key, keys are never echoed
or logged, and a tenant can neither see nor touch another tenant's jobs, reports or uploads."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from api_testlib import ALICE_KEY, BOB_KEY, assert_error, auth, queued_messages
from fastapi.testclient import TestClient
from pydantic import ValidationError

from neuronscope.contracts import Report
from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings, parse_api_keys
from neuronscope.storage import FileSystemStorage
from service.main import create_app

ALICE_SECOND_KEY = "alice-rotated-key-fedcba9876543210"
KEYS = {ALICE_KEY: "alice", ALICE_SECOND_KEY: "alice", BOB_KEY: "bob"}


@pytest.fixture
def keyed_settings(make_settings: Any) -> Settings:
    settings: Settings = make_settings(api_keys=KEYS)
    return settings


@pytest.fixture
def api(keyed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings)) as client:
        yield client


def _v1_requests() -> list[tuple[str, str]]:
    """(method, path) of every /v1 operation in the app's OpenAPI document, with a UUID no job has
    in each path parameter (derived from the path, so every test process collects the same ids)."""
    doc = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    found = []
    for path, operations in doc["paths"].items():
        if path.startswith("/v1"):
            unused = uuid.UUID(bytes=hashlib.sha256(path.encode()).digest()[:16], version=4)
            concrete = re.sub(r"\{[^}]+\}", str(unused), path)
            found += [(method.upper(), concrete) for method in sorted(operations)]
    return found


V1_REQUESTS = _v1_requests()


def test_every_v1_route_is_covered() -> None:
    assert len(V1_REQUESTS) >= 9
    assert {m for m, _ in V1_REQUESTS} == {"GET", "POST", "DELETE"}


@pytest.mark.parametrize(("method", "path"), V1_REQUESTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("not-a-configured-key-at-all"),
        {"Authorization": f"Basic {ALICE_KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ALICE_KEY}x"},
    ],
    ids=["none", "unknown", "basic", "empty", "prefix"],
)
def test_every_v1_route_needs_a_key(api: TestClient, method: str, path: str, headers: dict[str, str]) -> None:
    response = api.request(
        method, path, headers=headers, files={"file": ("f", b"x")} if method == "POST" else None
    )
    body = assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ALICE_KEY not in body["detail"]


def test_health_and_docs_stay_open_and_everything_else_is_closed(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert_error(api.get("/readyz"), 503, "not_ready")  # no worker; but not 401
    assert api.get("/openapi.json").status_code == 200
    # Deny by default: a path that matches no route asks for a key before it says 404.
    assert_error(api.get("/v1/nothing-here"), 401, "unauthorized")
    assert_error(api.get("/nothing-here"), 401, "unauthorized")
    assert_error(api.get("/nothing-here", headers=auth(ALICE_KEY)), 404, "not_found")


def test_keys_map_to_tenants(api: TestClient, onnx_bytes: bytes) -> None:
    first = api.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}, headers=auth(ALICE_KEY))
    assert first.status_code == 201, first.text
    # Either of alice's keys is alice; the scheme is case-insensitive.
    again = api.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}, headers=auth(ALICE_SECOND_KEY))
    assert again.status_code == 200
    lower = api.get(f"/v1/models/{first.json()['id']}", headers={"Authorization": f"bearer {ALICE_KEY}"})
    assert lower.status_code == 200


def test_keys_are_never_logged_or_shown(
    keyed_settings: Settings, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(keyed_settings)) as client:
        client.get("/v1/jobs", headers=auth(ALICE_KEY))
        client.get("/v1/jobs", headers=auth(BOB_KEY + "-wrong"))
        client.get(f"/v1/jobs/{uuid.uuid4()}", headers=auth(ALICE_KEY))
    seen = caplog.text + "".join(capfd.readouterr())
    for key in KEYS:
        assert key not in seen
        assert key not in repr(keyed_settings) and key not in str(keyed_settings)


def test_settings_parse_both_forms_and_refuse_bad_keys() -> None:
    assert parse_api_keys(f'{{"{ALICE_KEY}": "alice", "{BOB_KEY}": "bob"}}') == {
        ALICE_KEY: "alice",
        BOB_KEY: "bob",
    }
    assert parse_api_keys(f" {ALICE_KEY}:alice , {BOB_KEY}:bob, ") == {ALICE_KEY: "alice", BOB_KEY: "bob"}
    assert parse_api_keys("") == {} and parse_api_keys(None) == {}
    for bad in (
        ":alice",  # empty key
        '{"": "alice"}',
        "short:alice",
        f"{ALICE_KEY}:",  # no tenant
        f"{ALICE_KEY}:al ice",
        f"{ALICE_KEY}",  # no tenant at all
        f"{ALICE_KEY}:alice,{ALICE_KEY}:bob",  # one key, two tenants
        f'{{"{ALICE_KEY}": "a", "{ALICE_KEY}": "b"}}',
        '{"has space in the key!": "x"}',
        "[1, 2]",
    ):
        with pytest.raises(ValidationError) as info:
            Settings(api_keys=bad)
        assert ALICE_KEY not in str(info.value), bad
    # A bad entry does not print the good keys next to it either.
    with pytest.raises(ValidationError) as info:
        Settings(api_keys={ALICE_KEY: "alice", "short": "bob"})
    assert ALICE_KEY not in str(info.value) and "short" not in str(info.value)


def test_settings_read_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONSCOPE_API_KEYS", f"{ALICE_KEY}:alice,{BOB_KEY}:bob")
    assert Settings().api_keys == {ALICE_KEY: "alice", BOB_KEY: "bob"}
    monkeypatch.setenv("NEURONSCOPE_API_KEYS", f'{{"{ALICE_KEY}": "alice"}}')
    assert Settings().api_keys == {ALICE_KEY: "alice"}


def test_without_keys_everyone_is_the_default_tenant(
    client: TestClient, onnx_bytes: bytes, caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    model = client.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)})
    assert model.status_code == 201
    # Any Authorization header (or none) is the same single tenant.
    assert client.get(f"/v1/models/{model.json()['id']}", headers=auth(ALICE_KEY)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="neuronscope"), TestClient(create_app(settings)):
        pass
    assert "trusted network" in caplog.text


# -- isolation ------------------------------------------------------------------------------------


def _unknown_body(api: TestClient, method: str, path: str, real_id: str, key: str) -> dict[str, Any]:
    """What ``key`` gets for the same request with a fresh, truly unknown id in place of ``real_id``."""
    fresh = str(uuid.uuid4()) if len(real_id) == 36 else uuid.uuid4().hex * 2
    response = api.request(method, path.replace(real_id, fresh), headers=auth(key))
    body = dict(response.json())
    body["detail"] = body["detail"].replace(fresh, real_id)
    return {"status": response.status_code, **body}


def _answer(response: Any) -> dict[str, Any]:
    return {"status": response.status_code, **response.json()}


def test_another_tenants_job_is_indistinguishable_from_an_unknown_one(
    api: TestClient, keyed_settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes, report: Report
) -> None:
    files = {"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)}
    submitted = api.post("/v1/analyze", files=files, headers=auth(ALICE_KEY))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert uuid.UUID(job_id).version == 4

    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/report"),
        ("GET", f"/v1/jobs/{job_id}/report.html"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]:
        response = api.request(method, path, headers=auth(BOB_KEY))
        assert_error(response, 404, "job_not_found")
        assert _answer(response) == _unknown_body(api, method, path, job_id, BOB_KEY)
    assert api.get("/v1/jobs", headers=auth(BOB_KEY)).json() == {"jobs": [], "next_cursor": None}

    # Alice's job is untouched by bob's DELETE and is all hers.
    assert api.get(f"/v1/jobs/{job_id}", headers=auth(ALICE_SECOND_KEY)).json()["status"] == "queued"
    assert [j["job_id"] for j in api.get("/v1/jobs", headers=auth(ALICE_KEY)).json()["jobs"]] == [job_id]

    # Once it succeeded, the report is still hers only.
    redis_client = connect(keyed_settings.require_redis_url())
    store = JobStore(redis_client, prefix=keyed_settings.key_prefix)
    store.start(job_id, max_attempts=3)
    FileSystemStorage(keyed_settings.data_dir).put_report(job_id, report.to_json().encode())
    store.finish(job_id, "succeeded")
    redis_client.close()
    assert api.get(f"/v1/jobs/{job_id}/report", headers=auth(ALICE_KEY)).status_code == 200
    for suffix in ("/report", "/report.html", ""):
        assert_error(api.get(f"/v1/jobs/{job_id}{suffix}", headers=auth(BOB_KEY)), 404, "job_not_found")


def test_another_tenants_uploads_cannot_be_used_or_probed(
    api: TestClient, keyed_settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    model_id = api.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}, headers=auth(ALICE_KEY)).json()[
        "id"
    ]
    dataset_id = api.post(
        "/v1/datasets", files={"file": ("d.npz", dataset_bytes)}, headers=auth(ALICE_KEY)
    ).json()["id"]

    for kind, artifact_id in (("models", model_id), ("datasets", dataset_id)):
        path = f"/v1/{kind}/{artifact_id}"
        response = api.get(path, headers=auth(BOB_KEY))
        assert_error(response, 404, "artifact_not_found")
        assert _answer(response) == _unknown_body(api, "GET", path, artifact_id, BOB_KEY)
        assert api.get(path, headers=auth(ALICE_KEY)).status_code == 200

    by_ids = {"model_id": model_id, "dataset_id": dataset_id}
    assert_error(api.post("/v1/analyze", data=by_ids, headers=auth(BOB_KEY)), 404, "artifact_not_found")
    mixed = api.post(
        "/v1/analyze",
        data={"model_id": model_id},
        files={"dataset": ("d.npz", dataset_bytes)},
        headers=auth(BOB_KEY),
    )
    assert_error(mixed, 404, "artifact_not_found")
    assert queued_messages(keyed_settings) == []

    # Uploading the same bytes tells bob nothing about alice (201, as for new bytes), then they are his.
    mine = api.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}, headers=auth(BOB_KEY))
    assert mine.status_code == 201 and mine.json()["id"] == model_id
    api.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes)}, headers=auth(BOB_KEY))
    assert api.post("/v1/analyze", data=by_ids, headers=auth(BOB_KEY)).status_code == 202


def test_an_inline_upload_to_analyze_is_owned_too(
    api: TestClient, onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    files = {"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)}
    job_id = api.post("/v1/analyze", files=files, headers=auth(ALICE_KEY)).json()["job_id"]
    job = api.get(f"/v1/jobs/{job_id}", headers=auth(ALICE_KEY)).json()
    again = api.post(
        "/v1/analyze",
        data={"model_id": job["model_id"], "dataset_id": job["dataset_id"]},
        headers=auth(ALICE_KEY),
    )
    assert again.status_code == 202, again.text
    assert api.get(f"/v1/models/{job['model_id']}", headers=auth(BOB_KEY)).status_code == 404
