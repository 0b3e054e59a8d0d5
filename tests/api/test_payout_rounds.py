"""POST/GET /v1/payout-rounds: a round is decided by the policy as a whole, each payout is an
ordinary withdrawal, and a refused, frozen or replayed round writes nothing new.

The policy is policies/default.yaml: at most 0.5 BTC per payout; 2 BTC per hour per wallet
and per token; 1 BTC and 24 payouts a day per destination; above 0.1 BTC, 2 approvals.
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import (
    audit_actions,
    audit_events,
    count_rows,
    external_destination,
    request_payout,
    verify_audit,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, PayoutRound, Withdrawal

ROUNDS = "/v1/payout-rounds"


def destinations(n: int, tag: str = "round miner") -> list[str]:
    return [external_destination(f"{tag} {i}")[0] for i in range(n)]


def round_body(amounts: list[int], *, to: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    addresses = to or destinations(len(amounts))
    return {
        "wallet": WALLET,
        "reference": "pplns round 812",
        "payouts": [
            {"destination": a, "amount_sat": amount, "reference": f"miner-{i}"}
            for i, (a, amount) in enumerate(zip(addresses, amounts, strict=True))
        ],
        **extra,
    }


def written(runtime: Runtime) -> dict[str, int]:
    return count_rows(runtime.db, Withdrawal, PayoutRound, AuditEvent)


def test_a_round_within_the_policy_is_accepted_whole(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    # 30 small payouts and one above the 0.1 BTC tier: the round is accepted, the small ones
    # approved at once, the large one waits for its approvals like a single withdrawal.
    amounts = [50_000 + i for i in range(30)] + [20_000_000]
    body = round_body(amounts)
    response = client.post(ROUNDS, json=body, headers=auth(tokens.all, "round-1"))
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["wallet"] == WALLET and view["reference"] == "pplns round 812"
    assert view["payout_count"] == 31 and view["total_sat"] == sum(amounts)
    assert view["counts"] == {"approved": 30, "pending_approval": 1}
    assert [p["index"] for p in view["payouts"]] == list(range(31))
    for sent, got in zip(body["payouts"], view["payouts"], strict=True):
        assert (got["destination"], got["amount_sat"], got["reference"]) == (
            sent["destination"],
            sent["amount_sat"],
            sent["reference"],
        )
        assert got["txid"] is None
    assert view["payouts"][-1]["status"] == "pending_approval"

    # Each payout is a normal withdrawal, with its decision and (if needed) approval request.
    small = client.get(f"/v1/withdrawals/{view['payouts'][0]['id']}", headers=auth(tokens.all))
    assert small.status_code == 200
    assert small.json()["status"] == "approved"
    assert small.json()["decision"]["outcome"] == "allow"
    large = client.get(f"/v1/withdrawals/{view['payouts'][-1]['id']}", headers=auth(tokens.all))
    assert large.json()["decision"]["required"] == {"group": "treasury", "m": 2}
    assert large.json()["approval_request_id"] is not None

    shown = client.get(f"{ROUNDS}/{view['id']}", headers=auth(tokens.read_only))
    assert shown.status_code == 200 and shown.json() == view
    actions = audit_actions(runtime.db)
    assert actions.count("withdrawal.requested") == 31
    assert actions.count("payout_round.requested") == 1


def test_a_round_whose_total_breaks_velocity_is_refused_whole_and_writes_nothing(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    # 1.6 BTC already held this hour (4 x 0.4 BTC, each waiting for approvals), then a round
    # of 5 x 0.09 BTC: the first four fit under 2 BTC per hour, the fifth crosses it.
    for i, address in enumerate(destinations(4, "earlier miner")):
        earlier = request_payout(
            client, tokens.all, key=f"earlier-{i}", destination=address, amount_sat=40_000_000
        )
        assert earlier.status_code == 201, earlier.text
    before = written(runtime)
    response = client.post(
        ROUNDS, json=round_body([9_000_000] * 5), headers=auth(tokens.all, "round-2")
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "policy_denied"
    assert error["field"] == "payouts[4].amount_sat"
    assert [p["index"] for p in error["payouts"]] == [4]
    broken = {r["rule"] for r in error["payouts"][0]["rules"]}
    assert broken == {"velocity.wallet-1h", "velocity.token-1h"}
    assert all(r["result"] == "fail" for r in error["payouts"][0]["rules"])
    assert "payouts[4]" in error["message"] and "velocity.wallet-1h" in error["message"]
    # Nothing but the refusal's audit event.
    after = written(runtime)
    assert after == {**before, "audit_events": before["audit_events"] + 1}
    assert audit_actions(runtime.db)[-1] == "payout_round.denied"
    # The key is not burnt: the same key with a round that fits is accepted.
    fitting = client.post(
        ROUNDS, json=round_body([9_000_000] * 4), headers=auth(tokens.all, "round-2")
    )
    assert fitting.status_code == 201, fitting.text


def test_the_rounds_own_payouts_count_per_destination(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    # 26 payouts to one address: the destination's limit is 24 payouts a day, so the 25th
    # and every later one are named, with the destination as the field to fix.
    same = external_destination("one busy miner")[0]
    before = written(runtime)
    response = client.post(
        ROUNDS, json=round_body([10_000] * 26, to=[same] * 26), headers=auth(tokens.all, "r3")
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "payouts[24].destination"
    assert [p["index"] for p in error["payouts"]] == [24, 25]
    assert {r["rule"] for p in error["payouts"] for r in p["rules"]} == {"velocity.destination-24h"}
    assert written(runtime)["withdrawals"] == before["withdrawals"]


def test_same_key_and_body_replays_and_another_body_conflicts(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    body = round_body([30_000, 40_000, 50_000])
    first = client.post(ROUNDS, json=body, headers=auth(tokens.all, "round-4"))
    assert first.status_code == 201, first.text
    before = written(runtime)
    again = client.post(ROUNDS, json=body, headers=auth(tokens.all, "round-4"))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    changed = round_body([30_000, 40_000, 50_001], to=[p["destination"] for p in body["payouts"]])
    conflict = client.post(ROUNDS, json=changed, headers=auth(tokens.all, "round-4"))
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["field"] == "Idempotency-Key"
    assert written(runtime) == before


def test_a_frozen_wallet_answers_423_and_writes_nothing(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    frozen = client.post(
        "/v1/freeze", json={"reason": "drill", "scope": "withdrawals"}, headers=auth(tokens.all)
    )
    assert frozen.status_code == 201, frozen.text
    before = written(runtime)
    response = client.post(ROUNDS, json=round_body([30_000] * 3), headers=auth(tokens.all, "r5"))
    assert response.status_code == 423, response.text
    assert response.json()["error"]["code"] == "frozen"
    assert written(runtime) == before


def test_rounds_are_listed_newest_first_with_a_cursor(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    made = []
    for n in range(3):
        body = round_body([20_000 + n], to=destinations(1, f"listed {n}"))
        response = client.post(ROUNDS, json=body, headers=auth(tokens.all, f"listed-{n}"))
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    first = client.get(f"{ROUNDS}?wallet={WALLET}&limit=2", headers=auth(tokens.all)).json()
    assert [r["id"] for r in first["payout_rounds"]] == made[::-1][:2]
    assert "payouts" not in first["payout_rounds"][0]
    assert first["payout_rounds"][0]["counts"] == {"approved": 1}
    second = client.get(
        f"{ROUNDS}?wallet={WALLET}&limit=2&cursor={first['next_cursor']}",
        headers=auth(tokens.all),
    ).json()
    assert [r["id"] for r in second["payout_rounds"]] == [made[0]]
    assert second["next_cursor"] is None
    missing = client.get(f"{ROUNDS}/00000000-0000-0000-0000-000000000000", headers=auth(tokens.all))
    assert missing.status_code == 404
    unknown = client.get(f"{ROUNDS}?wallet=nope", headers=auth(tokens.all))
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "wallet"


def test_a_rounds_audit_events_chain_and_verify_like_any_others(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    request_payout(client, tokens.all, key="before", destination=destinations(1, "before")[0])
    body = round_body([25_000 + i for i in range(40)])
    response = client.post(ROUNDS, json=body, headers=auth(tokens.all, "audited"))
    assert response.status_code == 201, response.text
    request_payout(client, tokens.all, key="after", destination=destinations(1, "after")[0])
    events = audit_events(runtime.db)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    report = verify_audit(runtime)
    assert report.ok, report.problems
    ids = {p["id"] for p in response.json()["payouts"]}
    per_payout = [e for e in events if e.subject_id in ids]
    assert [e.data["amount_sat"] for e in per_payout] == [25_000 + i for i in range(40)]
    assert {e.data["round_id"] for e in per_payout} == {response.json()["id"]}

    # An edited event of the round is caught like any other.
    doctored = {**per_payout[7].data, "amount_sat": 1}
    with runtime.db.engine.begin() as conn:
        conn.execute(
            update(AuditEvent).where(AuditEvent.seq == per_payout[7].seq).values(data=doctored)
        )
    assert not verify_audit(runtime).ok
