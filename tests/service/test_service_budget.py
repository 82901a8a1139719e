"""``POST /v1/analyze`` refuses, before anything is queued, a job whose planned work is over the
server's budget or whose explicit pairs name samples that cannot exist (real app, real Redis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_testlib import assert_error, npz_bytes, queued_messages
from fastapi.testclient import TestClient

from neuronscope.settings import Settings
from service.main import create_app

#: The issue's example: 1 M transition-density pairs × 100 k points each.
HUGE_TD = {"transition_density": {"pairs": {"count": 1_000_000}, "points": 100_000}}


def submit(client: TestClient, onnx: bytes, dataset: bytes, config: dict[str, Any]) -> Any:
    return client.post(
        "/v1/analyze",
        files={"model": ("m.onnx", onnx), "dataset": ("d.npz", dataset)},
        data={"config": json.dumps(config)},
    )


def assert_nothing_queued(client: TestClient, settings: Settings) -> None:
    assert queued_messages(settings) == []
    assert client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}


def test_the_issues_td_example_is_refused_naming_the_budget(
    client: TestClient, settings: Settings, onnx_bytes: bytes
) -> None:
    dataset = npz_bytes(samples=1500)  # 1,124,250 distinct pairs: the 1 M pairs exist
    body = assert_error(submit(client, onnx_bytes, dataset, HUGE_TD), 422, "budget_exceeded")
    detail = body["detail"]
    assert "1,000,000 pairs × 100,000 points = 100,000,000,000 points" in detail
    assert "NEURONSCOPE_MAX_TD_POINTS=1000000000" in detail
    assert_nothing_queued(client, settings)


def test_all_pairs_pattern_similarity_over_budget_is_refused(make_settings: Any, onnx_bytes: bytes) -> None:
    settings = make_settings(max_ps_pairs=100)
    with TestClient(create_app(settings)) as client:
        small = {"transition_density": None}
        body = assert_error(submit(client, onnx_bytes, npz_bytes(samples=20), small), 422, "budget_exceeded")
        assert "190 sample pairs (20 samples)" in body["detail"]
        assert "NEURONSCOPE_MAX_PS_PAIRS=100" in body["detail"]
        assert_nothing_queued(client, settings)
        # 14 samples: 91 pairs, within the budget.
        assert submit(client, onnx_bytes, npz_bytes(samples=14), small).status_code == 202
        # A sample of 30 pairs of each kind is at most 90 distinct pairs: within the budget too.
        sampled = {"pairs": {"count": 30}, "transition_density": None}
        assert submit(client, onnx_bytes, npz_bytes(samples=20), sampled).status_code == 202


def test_forward_cost_counts_samples_and_td_points_times_model_size(
    make_settings: Any, onnx_bytes: bytes
) -> None:
    assert len(onnx_bytes) < 1024 * 1024  # counted as 1 MiB
    settings = make_settings(max_forward_cost=70)
    config = {"transition_density": {"pairs": {"count": 4}, "points": 16}}
    with TestClient(create_app(settings)) as client:
        # 8 samples + 4 × 16 points = 72 forward passes × 1 MiB.
        body = assert_error(submit(client, onnx_bytes, npz_bytes(samples=8), config), 422, "budget_exceeded")
        assert "72 forward passes (8 samples + 64 transition-density points) × 1 MiB" in body["detail"]
        assert "NEURONSCOPE_MAX_FORWARD_COST=70" in body["detail"]
        assert_nothing_queued(client, settings)
        # 6 samples + 64 points = 70: exactly the budget.
        assert submit(client, onnx_bytes, npz_bytes(samples=6), config).status_code == 202


def test_the_budget_applies_to_uploads_analysed_by_id(
    client: TestClient, settings: Settings, onnx_bytes: bytes
) -> None:
    model_id = client.post("/v1/models", files={"file": ("m.onnx", onnx_bytes)}).json()["id"]
    dataset = npz_bytes(samples=1500)
    dataset_id = client.post("/v1/datasets", files={"file": ("d.npz", dataset)}).json()["id"]
    response = client.post(
        "/v1/analyze",
        data={"model_id": model_id, "dataset_id": dataset_id, "config": json.dumps(HUGE_TD)},
    )
    assert_error(response, 422, "budget_exceeded")
    assert_nothing_queued(client, settings)
    assert not list((settings.data_dir / "tmp").iterdir())  # the header probe left nothing behind


def test_zero_switches_a_budget_off(make_settings: Any, onnx_bytes: bytes) -> None:
    settings = make_settings(max_td_points=0, max_forward_cost=0)
    with TestClient(create_app(settings)) as client:
        assert submit(client, onnx_bytes, npz_bytes(samples=1500), HUGE_TD).status_code == 202


def test_default_budget_accepts_the_default_and_the_demo_config(
    client: TestClient, onnx_bytes: bytes
) -> None:
    demo = {"pairs": "all", "transition_density": {"pairs": {"count": 100}, "points": 512}}
    for config in ({}, demo):
        assert submit(client, onnx_bytes, npz_bytes(samples=360), config).status_code == 202


@pytest.mark.parametrize(
    "config",
    [
        {"pairs": [[2**63, 1]]},
        {"pairs": [[0, 2**64]]},
        {"transition_density": {"pairs": [[-1, 1]], "points": 4}},
        {"transition_density": {"pairs": [[10**400, 1]], "points": 4}},
        {"pairs": [[3, 3]]},
    ],
)
def test_pair_indices_beyond_int64_are_422_not_an_internal_error(
    client: TestClient, settings: Settings, onnx_bytes: bytes, dataset_bytes: bytes, config: dict[str, Any]
) -> None:
    body = assert_error(submit(client, onnx_bytes, dataset_bytes, config), 422, "invalid_config")
    assert "pair 0: expected" in body["detail"]
    assert len(body["detail"]) < 300
    assert_nothing_queued(client, settings)


def test_pair_indices_past_the_dataset_are_422_up_front(
    client: TestClient, settings: Settings, onnx_bytes: bytes
) -> None:
    past: dict[str, Any] = {"pairs": [[0, 1], [2, 8]], "transition_density": None}
    body = assert_error(submit(client, onnx_bytes, npz_bytes(samples=8), past), 422, "invalid_config")
    assert body["detail"] == (
        "config: pairs: pair 1 is [2, 8]: expected sample indices in [0, 8) (the dataset has 8 samples)"
    )
    assert_nothing_queued(client, settings)
    last: dict[str, Any] = {"transition_density": {"pairs": [[0, 7]], "points": 4}, "pairs": [[0, 7]]}
    assert submit(client, onnx_bytes, npz_bytes(samples=8), last).status_code == 202
