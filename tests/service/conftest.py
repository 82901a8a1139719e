"""Fixtures for the API tests: an app on the session's real Redis, a valid report, tiny uploads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_testlib import npz_bytes
from fastapi.testclient import TestClient

from neuronscope.contracts import AnalysisConfig, Report
from neuronscope.jobs import JobStore, connect
from neuronscope.settings import Settings
from neuronscope.storage import FileSystemStorage
from service.main import create_app


def _instance(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The smallest value a JSON schema accepts: required keys only, first choices, empty lists."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = schema[key]
            null = [o for o in options if o.get("type") == "null"]
            return None if null else _instance(options[0], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _instance(props[name], defs) for name in schema.get("required", [])}
    return {"array": [], "string": "x", "integer": 0, "number": 0.0, "boolean": False}.get(str(kind))


def minimal_report() -> Report:
    """A report built from the contract's own schema (placeholder values, not engine output), so
    these API tests follow the contract as it evolves."""
    schema = Report.model_json_schema(by_alias=True)
    data = _instance(schema, schema.get("$defs", {}))
    data["provenance"]["config"] = AnalysisConfig().model_dump(mode="json")
    data["model"]["format"] = "onnx"
    return Report.model_validate(data)


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


@pytest.fixture
def report() -> Report:
    return minimal_report()


@pytest.fixture(scope="session")
def onnx_bytes(tiny_model: Any) -> bytes:
    return bytes(tiny_model.model.read_bytes())


@pytest.fixture
def dataset_bytes() -> bytes:
    return npz_bytes()
