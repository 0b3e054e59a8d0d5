"""What the payout engine integrates against: the required Idempotency-Key in the document,
lookup by reference, polling by updated_since, the dry run and the fee estimate."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import count_rows, external_destination, request_payout
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, IdempotencyKey, Withdrawal
from walletsvc.db.models_webhooks import OutboxEvent

DEST, _ = external_destination("integrating miner")


def _page(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/withdrawals", headers=auth(token), params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_the_document_requires_the_idempotency_key(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/withdrawals"]["post"]
    [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header"
    assert key["required"] is True


def test_lookup_by_reference(client: TestClient, tokens: Tokens) -> None:
    first = request_payout(client, tokens.all, key="a", destination=DEST, reference="round-1/m-1")
    request_payout(client, tokens.all, key="b", destination=DEST, reference="round-1/m-2")
    found = _page(client, tokens.read_only, reference="round-1/m-1")["withdrawals"]
    assert [w["id"] for w in found] == [first.json()["id"]]
    assert _page(client, tokens.read_only, reference="no such")["withdrawals"] == []


def test_polling_by_updated_since_pages_oldest_change_first(
    client: TestClient, tokens: Tokens
) -> None:
    a = request_payout(client, tokens.all, key="a", destination=DEST).json()
    b = request_payout(client, tokens.all, key="b", destination=DEST).json()
    since = b["updated_at"]
    cancelled = client.post(f"/v1/withdrawals/{a['id']}/cancel", headers=auth(tokens.all))
    assert cancelled.status_code == 200, cancelled.text

    first = _page(client, tokens.read_only, updated_since=since, limit=1)
    assert [w["id"] for w in first["withdrawals"]] == [b["id"]]
    second = _page(
        client, tokens.read_only, updated_since=since, limit=1, cursor=first["next_cursor"]
    )
    assert [(w["id"], w["status"]) for w in second["withdrawals"]] == [(a["id"], "cancelled")]
    assert second["next_cursor"] is None
    # The newest-first cursor and the polling cursor are not interchangeable.
    newest = _page(client, tokens.read_only, limit=1)["next_cursor"]
    mixed = client.get(
        "/v1/withdrawals",
        headers=auth(tokens.read_only),
        params={"updated_since": since, "cursor": newest},
    )
    assert mixed.status_code == 422
    assert mixed.json()["error"]["field"] == "cursor"


def test_updated_since_must_be_an_rfc3339_time_with_a_zone(
    client: TestClient, tokens: Tokens
) -> None:
    for bad in ("2026-11-29T12:00:00", "yesterday", "2026-13-40T00:00:00Z"):
        response = client.get(
            "/v1/withdrawals", headers=auth(tokens.read_only), params={"updated_since": bad}
        )
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["field"] == "updated_since"


def test_dry_run_decides_and_writes_nothing(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    guarded = (Withdrawal, IdempotencyKey, AuditEvent, OutboxEvent)
    before = count_rows(runtime.db, *guarded)
    body = {"wallet": WALLET, "destination": DEST, "amount_sat": 100_000, "reference": "r"}
    allowed = client.post("/v1/withdrawals/dry-run", headers=auth(tokens.all), json=body)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["status"] == "approved"
    assert allowed.json()["decision"]["outcome"] == "allow"
    # Over the default policy's per-payout maximum: a denial is an answer, not an error.
    denied = client.post(
        "/v1/withdrawals/dry-run",
        headers=auth(tokens.all),
        json={**body, "amount_sat": 50_000_001},
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["status"] is None
    assert denied.json()["decision"]["outcome"] == "deny"
    bad = client.post(
        "/v1/withdrawals/dry-run", headers=auth(tokens.all), json={**body, "amount_sat": 1.5}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "amount_sat"
    assert count_rows(runtime.db, *guarded) == before


def test_dry_run_answers_423_while_frozen(client: TestClient, tokens: Tokens) -> None:
    client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": "drill"})
    body = {"wallet": WALLET, "destination": DEST, "amount_sat": 100_000}
    response = client.post("/v1/withdrawals/dry-run", headers=auth(tokens.all), json=body)
    assert response.status_code == 423
    assert response.json()["error"]["code"] == "frozen"


def test_fee_estimate(client: TestClient, tokens: Tokens) -> None:
    response = client.get(
        "/v1/fee-estimate", headers=auth(tokens.read_only), params={"target_blocks": 3}
    )
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["target_blocks"] == 3
    assert estimate["fee_rate_sat_per_vb"] == 2  # the fake chain's estimate, within the clamp
    assert 100 < estimate["single_payout_vsize"] < 200
    assert estimate["single_payout_fee_sat"] == 2 * estimate["single_payout_vsize"]
    for bad in ("0", "1009", "soon"):
        refused = client.get(
            "/v1/fee-estimate", headers=auth(tokens.read_only), params={"target_blocks": bad}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "target_blocks"
