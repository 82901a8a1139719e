"""The API fuzzed from its own OpenAPI document with schemathesis, in process, on a real Redis:
whatever the generated requests (valid and invalid), no 5xx and every response matches the
document (status code, content type, body schema, headers).

Bounded and deterministic: at most ``MAX_EXAMPLES`` requests per operation from a fixed seed
(``derandomize``), no example database, and a hard per-operation timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from api_testlib import ALICE_KEY, auth
from hypothesis import HealthCheck, settings

from service.main import create_app

MAX_EXAMPLES = 25
#: ``positive_data_acceptance`` wants every schema-valid request accepted, but a schema cannot say
#: "a valid ONNX model" or "exactly one of model and model_id": the API answers such requests 422
#: on purpose. Every other check runs (server errors, status codes, content types, bodies and
#: headers against the document, Allow on 405, missing or bad credentials refused).
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


#: The app under test. Its settings (the session's Redis, API keys) are handed over by the fixture
#: below before the first request; the OpenAPI document does not depend on them.
APP = create_app()
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP  # as schemathesis.openapi.from_asgi() does: every request goes to APP in process


@pytest.fixture(scope="module", autouse=True)
def _app_settings(make_settings: Any) -> None:
    APP.state.settings = make_settings(api_keys={ALICE_KEY: "alice"}, max_upload_mb=1)


# /readyz answers 503 by design here (no worker runs in this test); it has no inputs to fuzz.
fuzz: Callable[[Callable[[Any], None]], Callable[[Any], None]] = schema.exclude(path="/readyz").parametrize()


@fuzz
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(60)
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers=auth(ALICE_KEY), excluded_checks=EXCLUDED_CHECKS)
