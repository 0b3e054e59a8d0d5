"""The approval flow over real HTTP: login, what waits for me, approve, payout signed."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from tests.conftest import WALLET, Tokens, auth
from tests.governance_helpers import DEST, PASSWORD, Team, assert_nowhere_in_database
from tests.helpers import external_destination, verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent
from walletsvc.db.models_governance import Staff
from walletsvc.wallets.freezes import withdrawals_freeze


def login(client: TestClient, team: Team, name: str) -> dict[str, str]:
    member = team.members[name]
    response = client.post(
        "/v1/sessions",
        json={"username": name, "password": PASSWORD, "totp": member.live_code()},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token"].startswith("wsst_")
    assert body["staff"] == {"username": name, "role": "approver", "groups": ["treasury"]}
    return {"Authorization": f"Bearer {body['token']}"}


def test_two_approvers_release_a_payout_that_is_then_signed(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    team = Team(funded)
    for name in ("alice", "bob"):
        team.add(name)
    created = client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": DEST, "amount_sat": 20_000_000},
        headers=auth(tokens.all, "big-http"),
    )
    assert created.status_code == 201, created.text
    payout = created.json()
    assert payout["status"] == "pending_approval"
    assert payout["decision"]["required"] == {"group": "treasury", "m": 2}
    request_id = payout["approval_request_id"]

    alice, bob = login(client, team, "alice"), login(client, team, "bob")
    waiting = client.get("/v1/approvals?pending=true", headers=alice).json()["approvals"]
    assert [r["id"] for r in waiting] == [request_id]
    assert waiting[0]["content"]["amount_sat"] == 20_000_000
    digest = waiting[0]["digest"]  # what alice and bob reviewed, and decide on

    decided = client.post(
        f"/v1/approvals/{request_id}",
        json={
            "decision": "approve",
            "digest": digest,
            "totp": team.members["alice"].live_code(),
            "comment": "ok",
        },
        headers=alice,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["approvals_counted"] == 1
    # Nothing waits for alice any more; it still waits for bob.
    assert client.get("/v1/approvals?pending=true", headers=alice).json()["approvals"] == []
    assert len(client.get("/v1/approvals?pending=true", headers=bob).json()["approvals"]) == 1

    shown = client.get(f"/v1/withdrawals/{payout['id']}", headers=auth(tokens.read_only)).json()
    assert shown["status"] == "pending_approval"
    assert [(a["staff"], a["decision"], a["counts"]) for a in shown["approvals"]] == [
        ("alice", "approve", True)
    ]

    decided = client.post(
        f"/v1/approvals/{request_id}",
        json={"decision": "approve", "digest": digest, "totp": team.members["bob"].live_code()},
        headers=bob,
    )
    assert decided.json()["status"] == "approved"
    funded.tick()
    shown = client.get(f"/v1/withdrawals/{payout['id']}", headers=auth(tokens.read_only)).json()
    assert shown["status"] in ("signed", "broadcast")
    assert shown["txid"]
    assert sorted(a["staff"] for a in shown["approvals"]) == ["alice", "bob"]


def test_login_failures_are_vague_counted_and_never_leak_secrets(
    client: TestClient, runtime: Runtime
) -> None:
    team = Team(runtime)
    alice = team.add("alice")
    wrong_password = client.post(
        "/v1/sessions",
        json={"username": "alice", "password": "not the password", "totp": alice.live_code()},
    )
    unknown_user = client.post(
        "/v1/sessions", json={"username": "mallory", "password": PASSWORD, "totp": "123456"}
    )
    for response in (wrong_password, unknown_user):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_credentials"
    assert wrong_password.json() == unknown_user.json()  # no username oracle

    with runtime.db.read() as uow:
        session = uow.session
        row = session.scalar(select(Staff).where(Staff.username == "alice"))
        # A wrong password no longer counts toward the lock (anyone could cause it); the login
        # throttle slows guessing instead (tests/governance/test_login_abuse.py).
        assert row is not None and row.failed_attempts == 0
        assert PASSWORD not in row.password_hash and row.password_hash.startswith("$argon2id$")
        events = json.dumps([e.data for e in session.scalars(select(AuditEvent))], default=str)
    assert_nowhere_in_database(runtime, alice.secret)  # the signer holds it
    for secret in (alice.secret, PASSWORD, "not the password"):
        assert secret not in events


def test_a_decision_needs_a_staff_session_with_step_up(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    team = Team(runtime)
    team.add("alice")
    payout = client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": DEST, "amount_sat": 20_000_000},
        headers=auth(tokens.all, "big-http-2"),
    ).json()
    alice = login(client, team, "alice")
    digest = client.get(f"/v1/approvals/{payout['approval_request_id']}", headers=alice).json()[
        "digest"
    ]
    wrong = client.post(
        f"/v1/approvals/{payout['approval_request_id']}",
        json={"decision": "approve", "digest": digest, "totp": "12345"},
        headers=alice,
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"] == {
        "code": "invalid_totp",
        "message": "wrong TOTP code",
        "field": "totp",
    }
    token = client.post(
        f"/v1/approvals/{payout['approval_request_id']}",
        json={"decision": "approve", "digest": digest, "totp": "123456"},
        headers=auth(tokens.all),
    )
    assert token.status_code == 403


def test_audit_pages_by_sequence(client: TestClient, runtime: Runtime, tokens: Tokens) -> None:
    first = client.get("/v1/audit?after=0&limit=2", headers=auth(tokens.read_only)).json()
    assert [e["seq"] for e in first["events"]] == [1, 2]
    assert first["next_after"] == 2
    rest = client.get("/v1/audit?after=2&limit=1000", headers=auth(tokens.read_only)).json()
    assert (
        rest["events"][0]["seq"] == 3
        and rest["events"][0]["prev_hash"] == first["events"][1]["hash"]
    )


@pytest.mark.kernel
def test_a_payout_rewritten_in_the_database_is_refused_and_freezes_the_wallet(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    """Issue 9: a database writer turns a pending 0.15 BTC payout into 3 BTC to their own
    address; the approvers, shown the original, approve it through the API."""
    team = Team(funded)
    for name in ("alice", "bob"):
        team.add(name)
    payout = client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": DEST, "amount_sat": 15_000_000},
        headers=auth(tokens.all, "issue-9"),
    ).json()
    request_id = payout["approval_request_id"]
    alice, bob = login(client, team, "alice"), login(client, team, "bob")
    reviewed = client.get(f"/v1/approvals/{request_id}", headers=alice).json()
    assert reviewed["content"]["amount_sat"] == 15_000_000
    thief, thief_script = external_destination("issue-9 thief")
    with funded.db.write() as uow:
        uow.session.execute(
            text(
                "UPDATE withdrawals SET amount_sat = 300000000, destination = :address,"
                " script_pubkey = :script WHERE id = :id"
            ),
            {"address": thief, "script": thief_script.hex(), "id": payout["id"]},
        )
    for name, headers in (("alice", alice), ("bob", bob)):
        refused = client.post(
            f"/v1/approvals/{request_id}",
            json={
                "decision": "approve",
                "digest": reviewed["digest"],
                "totp": team.members[name].live_code(),
            },
            headers=headers,
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "integrity_failure"
    shown = client.get(f"/v1/approvals/{request_id}", headers=alice).json()
    assert (shown["status"], shown["digest"], shown["approvals_counted"]) == (
        "pending",
        reviewed["digest"],
        0,
    )
    funded.tick()
    with funded.db.read() as uow:
        row = uow.withdrawals.get(payout["id"])
        assert row is not None
        assert (row.status, row.transaction_id, row.authorization_mac) == (
            "pending_approval",
            None,
            None,
        )
        assert withdrawals_freeze(uow, row.wallet_id) is not None
    problems = verify_audit(funded).problems
    changed = f"approval request {request_id} has a withdrawal that changed after it was opened"
    assert changed in problems
