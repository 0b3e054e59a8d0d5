"""Request ids on every response and in the JSON log lines of the request; no secrets in the
log; a dependency that is down is logged once per change, not once per background pass."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth
from tests.governance_helpers import PASSWORD, Team
from walletsvc.bootstrap.logs import configure_service_logging
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import DependencyUnavailable


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The service's JSON logging, written to a buffer; the previous set-up restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_service_logging(logging.INFO, stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_a_sane_request_id_is_kept_and_echoed(client: TestClient) -> None:
    answer = client.get("/v1/health", headers={"X-Request-Id": "lb-7f3a.42"})
    assert answer.headers["X-Request-Id"] == "lb-7f3a.42"


@pytest.mark.parametrize("offered", [None, "has spaces in it", "x" * 300, 'quote"s'])
def test_otherwise_one_is_made(client: TestClient, offered: str | None) -> None:
    headers = {} if offered is None else {"X-Request-Id": offered}
    answer = client.get("/v1/health", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-Id"])


def test_errors_carry_the_header_and_keep_the_contract_body(client: TestClient) -> None:
    for answer in (
        client.get("/v1/wallets"),  # 401
        client.get("/v1/no-such-thing"),  # 404
        client.post("/v1/sessions", json={}),  # 422
    ):
        assert answer.headers["X-Request-Id"]
        assert set(answer.json()) == {"error"}
        assert set(answer.json()["error"]) == {"code", "message", "field"}


def test_log_lines_are_json_with_the_request_id_and_no_secrets(
    client: TestClient, runtime: Runtime, tokens: Tokens, log_output: io.StringIO
) -> None:
    alice = Team(runtime).add("alice")
    wallets = client.get("/v1/wallets", headers={**auth(tokens.all), "X-Request-Id": "req-1"})
    assert wallets.status_code == 200
    code = alice.live_code()
    session = client.post(
        "/v1/sessions", json={"username": "alice", "password": PASSWORD, "totp": code}
    )
    assert session.status_code == 201, session.text
    wrong = client.post(
        "/v1/sessions", json={"username": "alice", "password": "hunter2-wrong", "totp": code}
    )
    assert wrong.status_code == 401

    lines = _lines(log_output)
    mine = [line for line in lines if line.get("request_id") == "req-1"]
    assert mine and mine[0]["path"] == "/v1/wallets" and mine[0]["status"] == 200
    assert {line.get("request_id") for line in lines} >= {
        session.headers["X-Request-Id"],
        wrong.headers["X-Request-Id"],
    }
    text = log_output.getvalue()
    for secret in (tokens.all, PASSWORD, "hunter2-wrong", code, session.json()["token"]):
        assert secret not in text
    assert alice.secret not in text


def test_a_chain_outage_is_logged_once_each_way(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    down = True

    def tick() -> None:
        if down:
            raise DependencyUnavailable("connection refused")

    monkeypatch.setattr(runtime, "tick", tick)
    with caplog.at_level(logging.INFO, logger="walletsvc.bootstrap.runtime"):
        for _ in range(5):
            runtime.background_pass()
        down = False
        for _ in range(3):
            runtime.background_pass()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["chain unavailable", "chain available again"]
    assert all(r.exc_info is None for r in caplog.records), "no traceback for an outage"
    assert runtime.passes == 8


def test_a_field_named_like_a_credential_is_redacted(log_output: io.StringIO) -> None:
    logging.getLogger("walletsvc.test").warning("oops", extra={"password": "pw-123456"})
    structlog.get_logger("walletsvc.test").warning("oops", token="wst_leak")
    text = log_output.getvalue()
    assert "pw-123456" not in text and "wst_leak" not in text
    assert [line["password" if "password" in line else "token"] for line in _lines(log_output)] == [
        "[redacted]",
        "[redacted]",
    ]
