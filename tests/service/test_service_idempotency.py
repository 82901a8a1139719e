"""``Idempotency-Key`` on ``POST /v1/analyze`` and the per-tenant limit on unfinished jobs, against
a real Redis: one key and one request make one job, even when requests race; a tenant past its
limit gets 429 with Retry-After until one of its jobs ends."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from api_testlib import ALICE_KEY, BOB_KEY, assert_error, auth, npz_bytes, queued_messages
from fastapi.testclient import TestClient

from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings
from service.main import create_app


@pytest.fixture
def keyed_settings(make_settings: Any) -> Settings:
    settings: Settings = make_settings(
        api_keys={ALICE_KEY: "alice", BOB_KEY: "bob"}, max_active_jobs_per_tenant=3
    )
    return settings


@pytest.fixture
def api(keyed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings)) as client:
        yield client


@pytest.fixture
def ids(api: TestClient, onnx_bytes: bytes, dataset_bytes: bytes) -> dict[str, str]:
    """Alice's and bob's model and dataset (the same bytes, uploaded by each)."""
    for key in (ALICE_KEY, BOB_KEY):
        model = api.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}, headers=auth(key))
        dataset = api.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes)}, headers=auth(key))
    return {"model_id": model.json()["id"], "dataset_id": dataset.json()["id"]}


def analyze(
    api: TestClient, ids: dict[str, str], key: str = ALICE_KEY, idem: str | None = None, **data: Any
) -> Any:
    headers = auth(key) | ({"Idempotency-Key": idem} if idem is not None else {})
    return api.post("/v1/analyze", data=ids | data, headers=headers)


# -- Idempotency-Key ------------------------------------------------------------------------------


def test_the_same_key_and_request_return_the_same_job(
    api: TestClient, keyed_settings: Settings, ids: dict[str, str], onnx_bytes: bytes, dataset_bytes: bytes
) -> None:
    key = str(uuid.uuid4())
    first = analyze(api, ids, idem=key, config='{"seed": 3}')
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    # A retry: by ids, with the config spelled differently, and with the files themselves.
    again = analyze(api, ids, idem=key, config='{ "seed" : 3, "dying_threshold": 0.9 }')
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/jobs/{job_id}"
    files = {"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)}
    inline = api.post(
        "/v1/analyze",
        files=files,
        data={"config": '{"seed": 3}'},
        headers=auth(ALICE_KEY) | {"Idempotency-Key": key},
    )
    assert inline.status_code == 200 and inline.json()["job_id"] == job_id
    assert [m["kwargs"]["job_id"] for m in queued_messages(keyed_settings)] == [job_id]
    # Without a key, the same request is a new job.
    assert analyze(api, ids, config='{"seed": 3}').json()["job_id"] != job_id


def test_the_replay_reports_the_jobs_current_status(api: TestClient, ids: dict[str, str]) -> None:
    key = str(uuid.uuid4())
    job_id = analyze(api, ids, idem=key).json()["job_id"]
    assert api.delete(f"/v1/jobs/{job_id}", headers=auth(ALICE_KEY)).status_code == 200
    replay = analyze(api, ids, idem=key)
    assert replay.status_code == 200 and replay.json()["status"] == "cancelled"


@pytest.mark.parametrize("change", ["config", "dataset"])
def test_the_same_key_with_another_request_is_422(
    api: TestClient, keyed_settings: Settings, ids: dict[str, str], change: str
) -> None:
    key = str(uuid.uuid4())
    assert analyze(api, ids, idem=key, config='{"seed": 3}').status_code == 202
    if change == "config":
        response = analyze(api, ids, idem=key, config='{"seed": 4}')
    else:
        other = api.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes(seed=1))}, headers=auth(ALICE_KEY)
        )
        assert other.status_code == 201, other.text
        response = analyze(api, ids | {"dataset_id": other.json()["id"]}, idem=key, config='{"seed": 3}')
    assert_error(response, 422, "idempotency_key_reused")
    assert len(queued_messages(keyed_settings)) == 1


def test_keys_are_per_tenant(api: TestClient, keyed_settings: Settings, ids: dict[str, str]) -> None:
    key = "shared-key"
    alice = analyze(api, ids, ALICE_KEY, idem=key)
    bob = analyze(api, ids, BOB_KEY, idem=key, config='{"seed": 9}')  # another body: not a reuse for bob
    assert alice.status_code == bob.status_code == 202
    assert alice.json()["job_id"] != bob.json()["job_id"]
    assert_error(api.get(f"/v1/jobs/{alice.json()['job_id']}", headers=auth(BOB_KEY)), 404, "job_not_found")


@pytest.mark.parametrize("bad", ["", "a" * 256, "has space", "tab\there"])
def test_malformed_keys_are_422(api: TestClient, ids: dict[str, str], bad: str) -> None:
    assert_error(analyze(api, ids, idem=bad), 422, "invalid_request")


def test_racing_requests_with_one_key_make_one_job(
    api: TestClient, keyed_settings: Settings, ids: dict[str, str]
) -> None:
    key = str(uuid.uuid4())
    barrier = threading.Barrier(8)
    answers: list[tuple[int, str]] = []

    def post() -> None:
        barrier.wait()
        response = analyze(api, ids, idem=key)
        answers.append((response.status_code, response.json()["job_id"]))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8
    assert sorted(status for status, _ in answers) == [200] * 7 + [202]
    assert len({job_id for _, job_id in answers}) == 1
    assert len(queued_messages(keyed_settings)) == 1


def test_a_refused_request_does_not_use_up_its_key(
    api: TestClient, keyed_settings: Settings, ids: dict[str, str]
) -> None:
    for _ in range(3):
        assert analyze(api, ids).status_code == 202
    key = str(uuid.uuid4())
    assert_error(analyze(api, ids, idem=key), 429, "too_many_jobs")
    first, *_ = api.get("/v1/jobs", headers=auth(ALICE_KEY)).json()["jobs"]
    api.delete(f"/v1/jobs/{first['job_id']}", headers=auth(ALICE_KEY))
    assert analyze(api, ids, idem=key).status_code == 202  # the retry is accepted, as a new job


def test_keys_expire_after_the_ttl(make_settings: Any, onnx_bytes: bytes, dataset_bytes: bytes) -> None:
    settings = make_settings(idempotency_ttl_s=30)
    with TestClient(create_app(settings)) as client:
        files = {"model": ("m.onnx", onnx_bytes), "dataset": ("d.npz", dataset_bytes)}
        assert client.post("/v1/analyze", files=files, headers={"Idempotency-Key": "k"}).status_code == 202
    redis_client = connect(settings.require_redis_url())
    try:
        (name,) = [str(k) for k in redis_client.keys(f"{settings.key_prefix}:tenant:default:idempotency:*")]
        assert 0 < redis_client.ttl(name) <= 30
        assert re.fullmatch(r"[0-9a-f]{64}", name.rsplit(":", 1)[1])  # the key is stored hashed
    finally:
        redis_client.close()


# -- per-tenant limit on unfinished jobs ----------------------------------------------------------


def test_a_tenant_past_its_limit_gets_429_until_a_job_ends(
    api: TestClient, keyed_settings: Settings, ids: dict[str, str]
) -> None:
    jobs = [analyze(api, ids).json()["job_id"] for _ in range(3)]
    refused = analyze(api, ids)
    body = assert_error(refused, 429, "too_many_jobs")
    assert int(refused.headers["Retry-After"]) > 0
    assert "3" in body["detail"]
    assert len(queued_messages(keyed_settings)) == 3
    assert len(api.get("/v1/jobs", headers=auth(ALICE_KEY)).json()["jobs"]) == 3  # nothing recorded
    # Other tenants have their own count.
    assert analyze(api, ids, BOB_KEY).status_code == 202

    # The worker's path (through neuronscope.jobs) frees places as jobs succeed or fail ...
    redis_client = connect(keyed_settings.require_redis_url())
    store = JobStore(redis_client, prefix=keyed_settings.key_prefix)
    store.start(jobs[0], max_attempts=3)
    store.finish(jobs[0], "succeeded")
    assert analyze(api, ids).status_code == 202
    assert_error(analyze(api, ids), 429, "too_many_jobs")
    store.start(jobs[1], max_attempts=3)
    store.finish(jobs[1], "failed")
    redis_client.close()
    assert analyze(api, ids).status_code == 202
    # ... and so does a cancel.
    assert_error(analyze(api, ids), 429, "too_many_jobs")
    assert api.delete(f"/v1/jobs/{jobs[2]}", headers=auth(ALICE_KEY)).status_code == 200
    assert analyze(api, ids).status_code == 202


def test_a_replay_is_answered_even_at_the_limit(api: TestClient, ids: dict[str, str]) -> None:
    key = str(uuid.uuid4())
    job_id = analyze(api, ids, idem=key).json()["job_id"]
    for _ in range(2):
        analyze(api, ids)
    assert_error(analyze(api, ids), 429, "too_many_jobs")
    replay = analyze(api, ids, idem=key)
    assert replay.status_code == 200 and replay.json()["job_id"] == job_id


def test_zero_means_no_limit(make_settings: Any, onnx_bytes: bytes, dataset_bytes: bytes) -> None:
    with TestClient(create_app(make_settings(max_active_jobs_per_tenant=0))) as client:
        ids = {
            "model_id": client.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}).json()["id"],
            "dataset_id": client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes)}).json()["id"],
        }
        statuses = [client.post("/v1/analyze", data=ids).status_code for _ in range(5)]
    assert statuses == [202] * 5
