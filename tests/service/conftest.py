"""Fixtures for the API tests: an app on the session's real Redis, a valid report, tiny uploads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from neuronscope.contracts import AnalysisConfig, Report
from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from service.main import create_app


def minimal_report() -> Report:
    """A report that satisfies the contract (numbers are placeholders, not engine output)."""
    kind = {"pairs": 1, "mean": 0.5, "std": 0.0, "ps_d": {"lambda": [0.0, 1.0], "value": [1.0, 0.0]}}
    summary = {"pairs": 1, "mean": 0.5, "std": 0.0}
    return Report.model_validate(
        {
            "model": {
                "format": "onnx",
                "inputs": [{"name": "x", "shape": ["batch", 16], "dtype": "float32"}],
                "layers": [{"name": "relu1", "op_type": "relu", "neurons": 4, "shape": [4], "breakpoints": [0.0]}],
                "neurons": 4,
            },
            "dataset": {"samples": 2, "labels_source": "dataset", "classes": 2},
            "pattern_similarity": {
                "pair_selection": "all",
                "random": kind,
                "same_label": kind,
                "different_label": kind,
                "per_layer": [
                    {"name": "relu1", "random": summary, "same_label": summary, "different_label": summary}
                ],
            },
            "transition_density": None,
            "layers": [
                {
                    "name": "relu1", "op_type": "relu", "neurons": 4, "dead_fraction": 0.25,
                    "dying_fraction": 0.5, "dead_count": 1, "dying_count": 2, "dead_neurons": [0],
                    "dying_neurons": [0, 1], "region_occupancy": [0.5, 0.5],
                    "post_activation_mean": 0.1, "post_activation_var": 0.1,
                    "pre_activation_mean": 0.0, "pre_activation_var": 1.0,
                }
            ],
            "prediction_distance": {
                "random": {"pairs": 1, "mean": 0.1, "std": 0.0},
                "same_label": {"pairs": 1, "mean": 0.1, "std": 0.0},
                "different_label": {"pairs": 1, "mean": 0.1, "std": 0.0},
                "spearman_vs_ps": None,
                "spearman_vs_td": None,
            },
            "provenance": {
                "neuronscope_version": "0.1.0", "python_version": "3.11", "device": "cpu",
                "runtime": "test", "seed": 0, "created_at": "2025-01-01T00:00:00Z",
                "config": AnalysisConfig().model_dump(),
            },
            "timings": {"load_s": 0, "capture_s": 0, "pattern_similarity_s": 0, "transition_density_s": 0, "total_s": 0},
        }
    )  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def job_store(settings: Settings) -> Iterator[JobStore]:
    redis_client = connect(settings.require_redis_url())
    yield JobStore(redis_client, prefix=settings.key_prefix)
    redis_client.close()


@pytest.fixture
def storage(settings: Settings) -> FileSystemStorage:
    return FileSystemStorage(settings.data_dir)


def npz_bytes(samples: int = 8, features: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(samples, features)).astype(np.float32), y=rng.integers(0, 4, samples))
    return buf.getvalue()


@pytest.fixture
def report() -> Report:
    return minimal_report()


@pytest.fixture(scope="session")
def onnx_bytes(tiny_model: Any) -> bytes:
    return bytes(tiny_model.model.read_bytes())


@pytest.fixture
def dataset_bytes() -> bytes:
    return npz_bytes()
