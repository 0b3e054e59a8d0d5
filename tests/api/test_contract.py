"""Contract tests: schemathesis generates requests from the service's own OpenAPI document and
checks every answer against it: no 5xx, a declared status, a declared content type, and a
body that matches the declared schema (the one error shape included).

Each operation runs on a fresh service (database, keys, the fake chain) with an all-scopes
API token, so generated requests reach the handlers instead of stopping at 401. The number
of cases per operation is ``WALLETSVC_CONTRACT_EXAMPLES`` (default 8: a few hundred cases in
all for `make test`; `make fuzz` runs many more).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Tokens
from tests.helpers import LiveServer, live_server
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime

EXAMPLES = int(os.environ.get("WALLETSVC_CONTRACT_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# The document needs no runtime; the requests go to a live server on loopback sharing the
# test's runtime (a fresh one per operation).
schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    app = create_app(runtime.settings, runtime=runtime)
    with live_server(app) as running:
        # No rate limit: hundreds of requests from one token are the point here.
        app.state.rate_limiter = None
        yield running


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_matches_the_document(case: Any, server: LiveServer, tokens: Tokens) -> None:
    case.call_and_validate(
        base_url=server.url, headers={"Authorization": f"Bearer {tokens.all}"}, checks=CHECKS
    )


def test_a_body_that_is_not_utf8_is_invalid_json(server: LiveServer, tokens: Tokens) -> None:
    # Found by the contract test: FastAPI's own 400 for an undecodable body was undeclared.
    response = httpx.post(
        f"{server.url}/v1/withdrawals/dry-run",
        content=b"\xff{",
        headers={"Authorization": f"Bearer {tokens.all}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_json"
