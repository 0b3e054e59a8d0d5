"""Control characters (NUL above all: PostgreSQL cannot compare text holding it) in a path,
a query parameter or a body's text field answer 422 naming the input, never a 500. Found by
the contract test on PostgreSQL (`POST /v1/freeze` with a NUL in its reason)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import WALLET, Tokens, auth


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/wallets/%00", "path"),
        ("/v1/withdrawals/a%00b", "path"),
        ("/v1/approvals/%01", "path"),
        ("/v1/webhooks/%00/deliveries", "path"),
        ("/v1/withdrawals?wallet=%00", "wallet"),
        ("/v1/withdrawals?reference=r%00", "reference"),
        ("/v1/approvals?kind=%00", "kind"),
        ("/v1/policy?wallet=%7F", "wallet"),
    ],
)
def test_paths_and_queries(client: TestClient, tokens: Tokens, path: str, field: str) -> None:
    response = client.get(path, headers=auth(tokens.all))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": f"{field}: control characters are not allowed",
        "field": field,
    }


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/freeze", {"reason": "I\x00"}, "reason"),
        ("/v1/freeze", {"reason": "drill", "scope": "wallet", "wallet": "pool\x00"}, "wallet"),
        ("/v1/allowlist", {"wallet": WALLET, "address": "bc1", "label": "x\x00"}, "label"),
        ("/v1/sessions", {"username": "al\x00ce", "password": "p", "totp": "1"}, "username"),
        ("/v1/unfreeze", {"reason": "\x00"}, "reason"),
    ],
)
def test_body_text(
    client: TestClient, tokens: Tokens, path: str, body: dict[str, str], field: str
) -> None:
    response = client.post(path, headers=auth(tokens.all), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_reasons_may_span_lines(client: TestClient, tokens: Tokens) -> None:
    reason = "payouts to new addresses\n\tsee ticket 812"
    response = client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": reason})
    assert response.status_code == 201, response.text
    assert response.json()["reason"] == reason
