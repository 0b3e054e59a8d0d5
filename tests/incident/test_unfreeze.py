"""Governed unfreeze: a freeze lifts only when the governance.unfreeze quorum approves.

Continues the freeze race of test_freeze.py: with the worker running and payouts queued behind
a freeze, a proposal and one approval change nothing; the second approval lifts the freeze
and the payouts proceed. Approvals carry real RFC 6238 codes at injected (aligned) times.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import Tokens, auth, fund_wallet
from tests.governance_helpers import (
    Member,
    Team,
    aligned_now,
    decide,
    later,
)
from tests.helpers import run_cli
from tests.incident.test_freeze import _queue_payouts, _snapshot, _wait_for
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, Withdrawal
from walletsvc.db.models_incident import Freeze
from walletsvc.domain.errors import Forbidden
from walletsvc.governance import approvals
from walletsvc.incident.freeze import freeze
from walletsvc.incident.unfreeze import Requester, Target, propose
from walletsvc.wallets.freezes import active_freezes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob", "carol"):
        team.add(name)
    team.add("otto", role="operator")
    team.add("audrey", role="auditor", groups=())
    return team


def approve(runtime: Runtime, member: Member, request_id: str, moment: datetime) -> str:
    return decide(runtime, member, request_id, moment, comment="reviewed the incident")


def _status_counts(runtime: Runtime) -> dict[str, int]:
    with runtime.db.read() as uow:
        s = uow.session
        rows = s.execute(select(Withdrawal.status, func.count()).group_by(Withdrawal.status))
        return {status: int(n) for status, n in rows}


def test_payouts_proceed_only_after_an_approved_unfreeze(
    client: TestClient, runtime: Runtime, tokens: Tokens, team: Team
) -> None:
    runtime.settings.max_batch_outputs = 5
    runtime.settings.worker_interval_s = 0.01
    fund_wallet(runtime, blocks=140)
    _queue_payouts(runtime, 100)
    runtime.start_background()
    _wait_for(lambda: len(_snapshot(runtime)[0]) >= 2, runtime)

    frozen = client.post(
        "/v1/freeze",
        headers=auth(tokens.all),
        json={"reason": "abnormal withdrawals seen by on-call", "scope": "all"},
    )
    assert frozen.status_code == 201, frozen.text
    # The signer heard it first, in its own ledger: the database is not what stops it.
    assert runtime.signer.status()["frozen"] == {"*": "abnormal withdrawals seen by on-call"}
    at_freeze = _snapshot(runtime)

    # The proposal (an operator's session) and one approval: no quorum, nothing moves.
    otto = team.login(team.members["otto"])
    proposed = client.post(
        "/v1/unfreeze",
        headers=otto.headers(),
        json={"freeze_id": frozen.json()["id"], "reason": "drain explained: test traffic"},
    )
    assert proposed.status_code == 201, proposed.text
    body = proposed.json()
    assert body["status"] == "pending_approval"
    assert body["approval"]["required"] == {"group": "treasury", "m": 2}
    request_id = body["approval_request_id"]
    t0 = aligned_now()
    assert approve(runtime, team.members["alice"], request_id, t0) == "pending"
    passes = runtime.passes
    _wait_for(lambda: runtime.passes >= passes + 20, runtime)
    assert _snapshot(runtime) == at_freeze, "something was signed or broadcast without quorum"
    with runtime.db.read() as uow:
        s = uow.session
        assert len(active_freezes(uow)) == 1
    waiting = _status_counts(runtime).get("approved", 0)
    assert waiting > 0

    # The quorum: the freeze lifts in the approval's transaction and the queue drains.
    assert approve(runtime, team.members["bob"], request_id, later(t0, 1)) == "approved"
    with runtime.db.read() as uow:
        s = uow.session
        assert active_freezes(uow) == []
    assert runtime.signer.status()["frozen"] == {}  # lifted in the signer with the quorum
    _wait_for(lambda: _status_counts(runtime).get("approved", 0) == 0, runtime)
    _wait_for(lambda: _status_counts(runtime).get("signed", 0) == 0, runtime)
    assert len(_snapshot(runtime)[1]) > len(at_freeze[1])

    shown = client.get(f"/v1/unfreeze/{body['id']}", headers=auth(tokens.all)).json()
    assert shown["status"] == "applied"
    with runtime.db.read() as uow:
        s = uow.session
        lifted = s.get(Freeze, frozen.json()["id"])
        assert lifted is not None and lifted.lifted_by is not None
        assert "alice" in lifted.lifted_by and "bob" in lifted.lifted_by
        applied = s.scalar(select(AuditEvent).where(AuditEvent.action == "unfreeze.applied"))
    assert applied is not None
    assert applied.data["reason"] == "drain explained: test traffic"
    assert applied.data["requested_by"] == "staff:otto"
    assert applied.data["approved_by"] == ["alice", "bob"]


def test_any_staff_member_may_freeze_but_not_everyone_may_propose(
    client: TestClient, runtime: Runtime, team: Team
) -> None:
    audrey = team.login(team.members["audrey"])
    frozen = client.post(
        "/v1/freeze", headers=audrey.headers(), json={"reason": "auditor saw a drain"}
    )
    assert frozen.status_code == 201, frozen.text
    assert frozen.json()["created_by"] == "staff:audrey"
    refused = client.post("/v1/unfreeze", headers=audrey.headers(), json={"reason": "fine now"})
    assert refused.status_code == 403
    assert client.post("/v1/unfreeze", json={"reason": "x"}).status_code == 401


def test_requester_never_approves_and_later_freezes_stay(runtime: Runtime, team: Team) -> None:
    first = freeze(runtime.db, scope="all", wallet=None, reason="first", actor="test")
    alice = team.members["alice"]
    row = propose(
        runtime.db,
        runtime.tags,
        target=Target(),
        reason="all clear",
        requester=Requester("staff:alice", alice.staff_id),
    )
    assert row.freeze_ids == [first.id]
    # A freeze applied during the review is not part of what was approved.
    second = freeze(runtime.db, scope="withdrawals", wallet=None, reason="risk", actor="test")
    t0 = aligned_now()
    with pytest.raises(Forbidden):
        approve(runtime, alice, row.approval_request_id or "", t0)
    approve(runtime, team.members["bob"], row.approval_request_id or "", t0)
    assert approve(runtime, team.members["carol"], row.approval_request_id or "", t0) == (
        "approved"
    )
    with runtime.db.read() as uow:
        assert [f.id for f in active_freezes(uow)] == [second.id]


def test_cli_unfreeze_opens_a_request_without_the_api(runtime: Runtime, team: Team) -> None:
    frozen = freeze(runtime.db, scope="all", wallet=None, reason="pager", actor="test")
    result = run_cli(runtime.settings, "unfreeze", "--reason", "false alarm")
    assert result.returncode == 0, result.stderr
    assert frozen.id in result.stdout
    with runtime.db.read() as uow:
        session = uow.session
        assert [f.id for f in active_freezes(uow)] == [frozen.id]  # not lifted yet
        request = session.scalar(
            select(approvals.ApprovalRequest).where(approvals.ApprovalRequest.kind == "unfreeze")
        )
    assert request is not None and request.requester.startswith("cli:")
    t0 = aligned_now()
    approve(runtime, team.members["alice"], request.id, t0)
    approve(runtime, team.members["bob"], request.id, t0)
    with runtime.db.read() as uow:
        session = uow.session
        assert active_freezes(uow) == []


def test_unfreeze_with_nothing_frozen_is_a_conflict(client: TestClient, tokens: Tokens) -> None:
    answer = client.post("/v1/unfreeze", headers=auth(tokens.all), json={"reason": "x"})
    assert answer.status_code == 409
    missing = client.post(
        "/v1/unfreeze", headers=auth(tokens.all), json={"reason": "x", "freeze_id": "nope"}
    )
    assert missing.status_code == 404


def test_lifting_shows_the_held_payouts_and_a_cancelled_one_stays_out(
    client: TestClient, runtime: Runtime, tokens: Tokens, team: Team
) -> None:
    fund_wallet(runtime)
    _queue_payouts(runtime, 3)
    frozen = freeze(runtime.db, scope="all", wallet=None, reason="key theft?", actor="test")
    state = client.get("/v1/freeze", headers=auth(tokens.read_only)).json()
    held = state["held_payouts"]
    assert [(p["status"], p["amount_sat"]) for p in held] == [
        ("approved", 10_000),
        ("approved", 10_001),
        ("approved", 10_002),
    ]
    otto = team.login(team.members["otto"])
    proposed = client.post(
        "/v1/unfreeze",
        headers=otto.headers(),
        json={"freeze_id": frozen.id, "reason": "rotated; the queue is ours"},
    )
    assert proposed.status_code == 201, proposed.text
    body = proposed.json()
    assert [p["id"] for p in body["held_payouts"]] == [p["id"] for p in held]

    # An operator recognises one as not theirs and cancels it before the lift is approved.
    unwanted = held[1]["id"]
    cancelled = client.post(f"/v1/withdrawals/{unwanted}/cancel", headers=auth(tokens.all))
    assert cancelled.status_code == 200, cancelled.text
    shown = client.get(f"/v1/unfreeze/{body['id']}", headers=auth(tokens.all)).json()
    assert unwanted not in [p["id"] for p in shown["held_payouts"]]

    t0 = aligned_now()
    approve(runtime, team.members["alice"], body["approval_request_id"], t0)
    assert approve(runtime, team.members["bob"], body["approval_request_id"], later(t0, 1)) == (
        "approved"
    )
    runtime.tick()
    counts = _status_counts(runtime)
    assert counts == {"broadcast": 2, "cancelled": 1}
    after = client.get("/v1/freeze", headers=auth(tokens.read_only)).json()
    assert after == {"frozen": False, "freezes": [], "held_payouts": []}


def test_cli_freeze_and_unfreeze_list_the_held_payouts(runtime: Runtime) -> None:
    fund_wallet(runtime)
    _queue_payouts(runtime, 1)
    frozen = run_cli(runtime.settings, "freeze", "--reason", "pager")
    assert frozen.returncode == 0, frozen.stderr
    assert "1 held payout(s), 10000 sat" in frozen.stdout
    asked = run_cli(runtime.settings, "unfreeze", "--reason", "false alarm")
    assert asked.returncode == 0, asked.stderr
    with runtime.db.read() as uow:
        (payout,) = uow.withdrawals.with_status("approved")
    assert "1 held payout(s), 10000 sat, leave when the freezes lift" in asked.stdout
    assert payout.id in asked.stdout and payout.destination in asked.stdout
