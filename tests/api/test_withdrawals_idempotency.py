"""Idempotency-Key on POST /v1/withdrawals: replays, conflicts, concurrency, per-token scope."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth
from tests.helpers import (
    audit_events,
    count_rows,
    external_destination,
    live_server,
    request_payout,
)
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime

DEST, _ = external_destination("idempotent miner")
OTHER_DEST, _ = external_destination("another miner")


def test_same_key_same_body_is_one_withdrawal(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    first = request_payout(client, tokens.all, key="k-1", destination=DEST, reference="round 7")
    assert first.status_code == 201, first.text
    for _ in range(2):
        again = request_payout(client, tokens.all, key="k-1", destination=DEST, reference="round 7")
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["status"] == first.json()["status"]
        assert again.json()["decision"] == first.json()["decision"]
    assert count_rows(runtime.db) == {
        "withdrawals": 1,
        "idempotency_keys": 1,
        "chain_transactions": 0,
    }
    assert len(audit_events(runtime.db, "withdrawal.requested")) == 1


def test_same_key_other_body_is_a_conflict(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    first = request_payout(client, tokens.all, key="k-2", destination=DEST, amount_sat=100_000)
    assert first.status_code == 201
    variants = [
        {"destination": DEST, "amount_sat": 100_001},
        {"destination": OTHER_DEST, "amount_sat": 100_000},
        {"destination": DEST, "amount_sat": 100_000, "reference": "changed"},
    ]
    for variant in variants:
        response = request_payout(client, tokens.all, key="k-2", **variant)  # type: ignore[arg-type]
        assert response.status_code == 409, (variant, response.text)
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert error["field"] == "Idempotency-Key"
    # The original is untouched and still replays.
    replay = request_payout(client, tokens.all, key="k-2", destination=DEST, amount_sat=100_000)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert count_rows(runtime.db)["withdrawals"] == 1


def test_keys_are_scoped_per_token(client: TestClient, runtime: Runtime, tokens: Tokens) -> None:
    mine = request_payout(client, tokens.all, key="shared-key", destination=DEST)
    theirs = request_payout(client, tokens.create_only, key="shared-key", destination=DEST)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    # A different body under the other token's key is no conflict for this token.
    other = request_payout(client, tokens.create_only, key="k-only-there", destination=OTHER_DEST)
    assert other.status_code == 201
    assert (
        request_payout(client, tokens.all, key="k-only-there", destination=DEST).status_code == 201
    )
    assert count_rows(runtime.db)["withdrawals"] == 4
    assert count_rows(runtime.db)["idempotency_keys"] == 4


def test_fifty_concurrent_requests_with_one_key_make_one_withdrawal(
    runtime: Runtime, tokens: Tokens
) -> None:
    app = create_app(runtime.settings, runtime=runtime)
    n = 50
    start = threading.Barrier(n)

    with live_server(app) as server:

        def post(_: int) -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                start.wait()
                return request_payout(http, tokens.all, key="race", destination=DEST)

        with ThreadPoolExecutor(max_workers=n) as pool:
            responses = list(pool.map(post, range(n)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (n - 1) + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    assert count_rows(runtime.db) == {
        "withdrawals": 1,
        "idempotency_keys": 1,
        "chain_transactions": 0,
    }
    assert len(audit_events(runtime.db, "withdrawal.requested")) == 1


def test_the_created_reply_is_what_reading_the_withdrawal_back_shows(
    client: TestClient, tokens: Tokens
) -> None:
    """The 201 is built from what intake wrote (no read-back): it must equal the GET, for an
    allowed payout and for one waiting for approvers (its approval request named)."""
    small = request_payout(client, tokens.all, key="v-1", destination=DEST, reference="r-1")
    # Above the default policy's approval tier: waits for staff.
    big = request_payout(client, tokens.all, key="v-2", destination=DEST, amount_sat=20_000_000)
    assert [small.status_code, big.status_code] == [201, 201]
    assert big.json()["status"] == "pending_approval"
    assert big.json()["approval_request_id"] is not None
    for created in (small, big):
        shown = client.get(f"/v1/withdrawals/{created.json()['id']}", headers=auth(tokens.all))
        assert shown.status_code == 200
        assert created.json() == shown.json()
