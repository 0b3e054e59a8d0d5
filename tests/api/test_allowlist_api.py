"""The allowlist: staff entries need the quorum, payout-engine entries are accepted (or need
the quorum when the policy requires the allowlist), removal is immediate, and the policy
engine sees the entry of a payout's destination."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth
from tests.governance_helpers import (
    DEST,
    Team,
    aligned_now,
    decide,
    default_document,
    install,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent
from walletsvc.db.models_governance import AllowlistEntryRow
from walletsvc.governance import approvals
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal


def propose(client: TestClient, headers: dict[str, str], label: str = "x") -> Any:
    return client.post(
        "/v1/allowlist", json={"wallet": WALLET, "address": DEST, "label": label}, headers=headers
    )


def test_a_staff_entry_needs_the_quorum_then_cools_off(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    team = Team(runtime)
    alice = team.login(team.add("alice"))
    bob, carol = team.add("bob"), team.add("carol")
    created = propose(client, alice.headers(), "exchange cold wallet")
    assert created.status_code == 201, created.text
    entry = created.json()
    assert (entry["status"], entry["source"], entry["usable_from"]) == ("pending", "treasury", None)

    t0 = aligned_now()
    request_id = entry["approval_request_id"]
    for member, expected in ((bob, "pending"), (carol, "approved")):
        status = decide(runtime, member, request_id, t0)
        assert status == expected
    shown = client.get(f"/v1/allowlist/{entry['id']}", headers=auth(tokens.read_only)).json()
    assert shown["status"] == "active"
    assert shown["active_since"] == t0.isoformat()
    assert shown["usable_from"] == (t0 + timedelta(hours=24)).isoformat()  # cooling-off
    assert shown["integrity_ok"] is True
    # The signer took it first, with the quorum it recorded itself; its cooling-off runs
    # from its own clock (here the moment the test injected).
    assert runtime.signer.status()["allowlist"] == {
        WALLET: [{"address": DEST, "active_since": t0.isoformat()}]
    }
    # A second entry for the same address is refused while this one lives.
    assert propose(client, alice.headers()).status_code == 409

    # Removal tightens: the signer drops its copy at once, before the database.
    response = client.delete(f"/v1/allowlist/{entry['id']}", headers=alice.headers())
    assert response.status_code == 204
    assert runtime.signer.status()["allowlist"] == {}


def test_a_payout_engine_entry_is_accepted_when_the_allowlist_is_not_required(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    created = propose(client, auth(tokens.all), "miner 77")
    assert created.status_code == 201
    entry = created.json()
    assert (entry["status"], entry["source"], entry["approval_request_id"]) == (
        "active",
        "payout",
        None,
    )
    listed = client.get("/v1/allowlist", headers=auth(tokens.read_only)).json()["entries"]
    assert [e["id"] for e in listed] == [entry["id"]]


def test_a_payout_engine_entry_needs_the_quorum_when_the_allowlist_is_required(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    document = default_document()
    document["allowlist"]["required"] = True
    install(runtime, document)
    entry = propose(client, auth(tokens.all)).json()
    assert entry["status"] == "pending"
    with runtime.db.read() as uow:
        request = approvals.get_request(uow, entry["approval_request_id"])
        assert (request.required_group, request.m, request.requester_staff_id) == (
            "treasury",
            2,
            None,
        )


def test_removal_is_immediate_and_audited(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    team = Team(runtime)
    alice = team.login(team.add("alice"))
    entry = propose(client, alice.headers()).json()
    response = client.delete(f"/v1/allowlist/{entry['id']}", headers=alice.headers())
    assert response.status_code == 204
    shown = client.get(f"/v1/allowlist/{entry['id']}", headers=auth(tokens.read_only)).json()
    assert shown["status"] == "removed"
    with runtime.db.read() as uow:
        session = uow.session
        request = approvals.get_request(uow, entry["approval_request_id"])
        assert request.status == "cancelled"
        removed = session.scalar(select(AuditEvent).where(AuditEvent.action == "allowlist.removed"))
        assert removed is not None and removed.actor == "staff:alice"
    listed = client.get("/v1/allowlist", headers=auth(tokens.read_only)).json()["entries"]
    assert listed == []
    assert propose(client, alice.headers()).status_code == 201  # may be proposed again


def test_the_engine_sees_the_entry_of_the_destination(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    """With the default policy a listed address gets the trust ramp: 0.05 BTC at first."""
    t0 = aligned_now()
    propose(client, auth(tokens.all))

    def ask(amount: int, key: str, after: timedelta) -> str:
        try:
            return (
                request_withdrawal(
                    runtime.db,
                    runtime.tags,
                    body=WithdrawalInput(WALLET, DEST, amount, None),
                    idempotency_key=key,
                    token_id="t",
                    actor="token:engine",
                    now=t0 + after,
                ).withdrawal_id
                and "created"
            )
        except Exception as exc:  # the policy's refusal is the point
            return type(exc).__name__

    # Still cooling off: the entry is not usable yet, the ramp does not apply, but the
    # allowlist is not required either.
    assert ask(9_000_000, "a", timedelta(0)) == "created"
    # 25 hours on, the day of cooling-off is over and the ramp allows 0.05 BTC per day at
    # first (the first payout is out of the ramp's one-day window by then).
    later = timedelta(hours=25)
    assert ask(6_000_000, "b", later) == "PolicyDenied"
    assert ask(4_000_000, "c", later) == "created"


def test_a_tampered_entry_fails_closed(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    propose(client, auth(tokens.all))
    with runtime.db.write() as uow:
        row = uow.session.scalar(select(AllowlistEntryRow))
        assert row is not None
        row.active_since = row.created_at - timedelta(days=365)  # skip the cooling-off
    response = client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": DEST, "amount_sat": 10_000},
        headers=auth(tokens.all, "tampered"),
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_failure"
