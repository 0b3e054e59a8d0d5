"""Policy changes: the ratchet decides the flow; tightening at once, loosening after quorum
and the time lock, a veto stops it; the audit log shows who proposed and who approved."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.conftest import Tokens, auth
from tests.governance_helpers import (
    Member,
    Team,
    aligned_now,
    decide,
    default_document,
    install,
    later,
    principal,
)
from tests.helpers import verify_audit
from tests.signer_helpers import install_policy_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent
from walletsvc.db.models_governance import PolicyProposal
from walletsvc.governance import policy_changes
from walletsvc.policy.document import parse_policy


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob", "carol", "dave"):
        team.add(name)
    team.login(team.members["alice"])
    return team


def propose(client: TestClient, team: Team, document: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/policy/proposals", json={"document": document}, headers=team.members["alice"].headers()
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def approve(runtime: Runtime, member: Member, request_id: str, moment: datetime) -> str:
    return decide(runtime, member, request_id, moment)


def active_sha(client: TestClient, tokens: Tokens) -> str:
    sha: str = client.get("/v1/policy", headers=auth(tokens.read_only)).json()["sha256"]
    return sha


def proposal(client: TestClient, tokens: Tokens, proposal_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(
        f"/v1/policy/proposals/{proposal_id}", headers=auth(tokens.read_only)
    ).json()
    return body


def mine(runtime: Runtime, blocks: int) -> None:
    """Blocks for the time lock's chain count: mined, then seen by the scanner."""
    runtime.chain.mine(blocks)  # type: ignore[attr-defined]
    runtime.scanner.sync()


def audit(runtime: Runtime) -> list[tuple[str, str, dict[str, Any]]]:
    with runtime.db.read() as uow:
        session = uow.session
        return [(e.actor, e.action, e.data) for e in session.scalars(select(AuditEvent))]


def test_get_policy_shows_the_active_document(client: TestClient, tokens: Tokens) -> None:
    body = client.get("/v1/policy", headers=auth(tokens.read_only)).json()
    assert body["version"] == 1 and len(body["sha256"]) == 64
    assert body["rules"]["max_per_payout_sat"] == 50_000_000
    assert body["rules"]["governance"]["policy_change_timelock"] == 48 * 3600


def test_a_tightening_applies_at_once_on_one_approvers_word(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    before = active_sha(client, tokens)
    # As YAML text, the way it is kept in policies/.
    text = yaml.safe_dump(default_document(max_per_payout_sat=40_000_000))
    p = propose(client, team, text)
    assert p["direction"] == "tighten" and p["required"] == {"group": "treasury", "m": 1}
    assert p["assessment"]["changes"][0]["path"] == "max_per_payout_sat"
    assert active_sha(client, tokens) == before  # nothing until an approver says so

    # The proposer cannot approve it alone.
    with pytest.raises(Exception, match="own request"):
        approve(runtime, team.members["alice"], p["approval_request_id"], aligned_now())
    assert approve(runtime, team.members["bob"], p["approval_request_id"], aligned_now()) == (
        "approved"
    )
    assert active_sha(client, tokens) == p["sha256"] != before
    assert runtime.signer.status()["policy_hash"] == p["sha256"]  # at once in the signer too
    assert proposal(client, tokens, p["id"])["status"] == "applied"
    events = audit(runtime)
    assert ("staff:alice", "policy.proposed") in [(a, b) for a, b, _ in events]
    applied = [d for _, action, d in events if action == "policy.proposal_applied"]
    assert applied == [
        {
            "sha256": p["sha256"],
            "direction": "tighten",
            "proposed_by": "staff:alice",
            "approved_by": ["bob"],
        }
    ]


def test_a_change_the_signer_refuses_is_audited_and_not_applied(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    """The signer's copy was changed on its host since the proposal was assessed (the
    operator's local override): the proposal's base is not its copy, so it refuses, and the
    service installs nothing either."""
    before = active_sha(client, tokens)
    p = propose(client, team, default_document(max_per_payout_sat=40_000_000))
    install_policy_in_signer(
        runtime.settings, parse_policy(default_document(max_per_payout_sat=45_000_000))
    )
    assert approve(runtime, team.members["bob"], p["approval_request_id"], aligned_now()) == (
        "approved"
    )
    assert active_sha(client, tokens) == before
    assert proposal(client, tokens, p["id"])["status"] == "failed"
    refused = [d for _, action, d in audit(runtime) if action == "governed.signer_refused"]
    assert len(refused) == 1 and "assessed against policy" in refused[0]["reason"]
    assert refused[0]["kind"] == "policy_change"


def test_a_loosening_needs_the_quorum_then_the_time_lock(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    before = active_sha(client, tokens)
    p = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    assert p["direction"] == "loosen" and p["required"] == {"group": "treasury", "m": 2}
    assert p["timelock_s"] == 48 * 3600
    t0 = aligned_now()

    # Without quorum nothing changes, however long we wait (until the request expires).
    assert approve(runtime, team.members["bob"], p["approval_request_id"], t0) == "pending"
    runtime.governance_tick(now=t0 + timedelta(hours=1))
    assert active_sha(client, tokens) == before
    assert proposal(client, tokens, p["id"])["status"] == "pending_approval"

    assert approve(runtime, team.members["carol"], p["approval_request_id"], t0) == "approved"
    shown = proposal(client, tokens, p["id"])
    assert shown["status"] == "time_locked"
    assert datetime.fromisoformat(shown["effective_at"]) == t0 + timedelta(hours=48)
    assert shown["effective_height"] == 288  # and 48 h of blocks: 288 at ten minutes
    mine(runtime, 288)
    runtime.governance_tick(now=t0 + timedelta(hours=47, minutes=59))
    assert active_sha(client, tokens) == before

    runtime.governance_tick(now=t0 + timedelta(hours=48, seconds=1))
    assert active_sha(client, tokens) == p["sha256"]
    assert runtime.signer.status()["policy_hash"] == p["sha256"]  # the signer's copy too
    assert proposal(client, tokens, p["id"])["status"] == "applied"
    applied = [(a, d) for a, action, d in audit(runtime) if action == "policy.proposal_applied"]
    assert applied == [
        (
            "system:policy-timelock",
            {
                "sha256": p["sha256"],
                "direction": "loosen",
                "proposed_by": "staff:alice",
                "approved_by": ["bob", "carol"],
            },
        )
    ]


def test_a_single_veto_cancels_a_time_locked_loosening(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    before = active_sha(client, tokens)
    p = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], p["approval_request_id"], t0)
    approve(runtime, team.members["carol"], p["approval_request_id"], t0)
    dave = team.members["dave"]
    policy_changes.veto(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        proposal_id=p["id"],
        staff=principal(runtime, dave),
        totp=dave.code_at(later(t0, 5)),
        comment="why now?",
        now=later(t0, 5),
    )
    runtime.governance_tick(now=t0 + timedelta(days=3))
    assert active_sha(client, tokens) == before
    shown = proposal(client, tokens, p["id"])
    assert (shown["status"], shown["vetoed_by"]) == ("vetoed", "staff:dave")
    assert ("staff:dave", "policy.vetoed") in [(a, b) for a, b, _ in audit(runtime)]


def test_a_veto_over_http_needs_a_fresh_code(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    p = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], p["approval_request_id"], t0)
    approve(runtime, team.members["carol"], p["approval_request_id"], t0)
    dave = team.login(team.members["dave"])
    refused = client.post(
        f"/v1/policy/proposals/{p['id']}/veto", json={"totp": "000000"}, headers=dave.headers()
    )
    assert refused.status_code == 403
    vetoed = client.post(
        f"/v1/policy/proposals/{p['id']}/veto",
        json={"totp": dave.live_code(), "comment": "no"},
        headers=dave.headers(),
    )
    assert vetoed.status_code == 200, vetoed.text
    assert vetoed.json()["status"] == "vetoed"


def test_a_loosening_is_superseded_if_the_policy_changed_meanwhile(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    loosen = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], loosen["approval_request_id"], t0)
    approve(runtime, team.members["carol"], loosen["approval_request_id"], t0)
    tighten = propose(client, team, default_document(approval_expiry="12h"))
    approve(runtime, team.members["dave"], tighten["approval_request_id"], t0)
    assert active_sha(client, tokens) == tighten["sha256"]
    mine(runtime, 288)
    runtime.governance_tick(now=t0 + timedelta(hours=49))
    assert active_sha(client, tokens) == tighten["sha256"]
    assert proposal(client, tokens, loosen["id"])["status"] == "superseded"


def test_bad_and_unchanged_documents_are_refused(client: TestClient, team: Team) -> None:
    headers = team.members["alice"].headers()
    bad = default_document(max_per_payout_sat=-5)
    response = client.post("/v1/policy/proposals", json={"document": bad}, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "max_per_payout_sat"
    same = client.post(
        "/v1/policy/proposals", json={"document": default_document()}, headers=headers
    )
    assert same.status_code == 409
    listed = client.get("/v1/policy/proposals", headers=headers).json()["proposals"]
    assert listed == []


def test_the_time_lock_also_waits_for_the_chain(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    before = active_sha(client, tokens)
    mine(runtime, 10)
    p = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], p["approval_request_id"], t0)
    approve(runtime, team.members["carol"], p["approval_request_id"], t0)
    assert proposal(client, tokens, p["id"])["effective_height"] == 10 + 288
    # A host clock moved a month ahead does not end the lock: the chain has not moved.
    runtime.governance_tick(now=t0 + timedelta(days=30))
    mine(runtime, 287)
    runtime.governance_tick(now=t0 + timedelta(days=30))
    assert active_sha(client, tokens) == before
    assert proposal(client, tokens, p["id"])["status"] == "time_locked"
    mine(runtime, 1)
    runtime.governance_tick(now=t0 + timedelta(days=30))
    assert active_sha(client, tokens) == p["sha256"]


def test_a_policy_that_changed_and_changed_back_supersedes_a_loosening(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    original = active_sha(client, tokens)
    loosen = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], loosen["approval_request_id"], t0)
    approve(runtime, team.members["carol"], loosen["approval_request_id"], t0)
    tighten = propose(client, team, default_document(approval_expiry="12h"))
    approve(runtime, team.members["dave"], tighten["approval_request_id"], t0)
    install(runtime, default_document())  # A -> B -> A: the same document, version 3
    assert active_sha(client, tokens) == original
    mine(runtime, 288)
    runtime.governance_tick(now=t0 + timedelta(hours=49))
    assert active_sha(client, tokens) == original
    assert proposal(client, tokens, loosen["id"])["status"] == "superseded"
    superseded = [d for _, a, d in audit(runtime) if a == "policy.proposal_superseded"]
    assert superseded[-1]["base_version"] == "default/1"
    assert superseded[-1]["active_version"] == "default/3"


def _one_approval_does_not_apply(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens, document: Any
) -> dict[str, Any]:
    before = active_sha(client, tokens)
    p = propose(client, team, document)
    assert p["direction"] == "loosen", p["assessment"]
    assert p["required"] == {"group": "treasury", "m": 2}
    assert p["timelock_s"] == 48 * 3600
    t0 = aligned_now()
    assert approve(runtime, team.members["bob"], p["approval_request_id"], t0) == "pending"
    assert active_sha(client, tokens) == before
    return p


def test_a_longer_cooling_off_that_drops_the_trust_ramp_needs_quorum_and_time_lock(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    # The allowlist is not required: an entry still cooling off skips the ramp entirely.
    document = default_document()
    document["allowlist"]["cooling_off"] = "48h"
    p = _one_approval_does_not_apply(client, runtime, team, tokens, document)
    assert {"path": "allowlist.cooling_off", "direction": "loosen"}.items() <= next(
        c for c in p["assessment"]["changes"] if c["path"] == "allowlist.cooling_off"
    ).items()


def test_moving_payouts_to_another_group_needs_quorum_and_time_lock(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    # Unlisted addresses above 0.1 BTC: 2 of treasury before, 3 of security after.
    document = default_document()
    document["allowlist"]["required"] = True
    document["allowlist"]["approval"] = {"group": "security", "m": 3}
    p = _one_approval_does_not_apply(client, runtime, team, tokens, document)
    loosened = {c["path"] for c in p["assessment"]["changes"] if c["direction"] == "loosen"}
    assert "allowlist.required" in loosened


def test_a_tier_that_moves_unlisted_payouts_to_ops_needs_quorum_and_time_lock(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens
) -> None:
    base = default_document()
    base["allowlist"]["required"] = True
    base["allowlist"]["approval"] = {"group": "security", "m": 3}
    install(runtime, base)
    # Every requirement taken alone rises, but unlisted payouts move from security to ops.
    document = default_document(allowlist=base["allowlist"])
    document["approval_tiers"] = [
        {"above_sat": 0, "group": "ops", "m": 3},
        {"above_sat": 10_000_000, "group": "treasury", "m": 3},
        {"above_sat": 100_000_000, "group": "treasury", "m": 3},
    ]
    p = _one_approval_does_not_apply(client, runtime, team, tokens, document)
    loosened = {c["path"] for c in p["assessment"]["changes"] if c["direction"] == "loosen"}
    assert "approval_tiers[>0]" in loosened


@pytest.mark.parametrize("edit", ["lock shortened", "status forged"])
def test_a_time_lock_edited_in_the_database_never_applies_and_is_named_by_verify(
    client: TestClient, runtime: Runtime, team: Team, tokens: Tokens, edit: str
) -> None:
    """A database writer ends a loosening's veto window early (or marks a proposal still
    waiting for its quorum as time-locked): the time lock fails its tag, `audit verify`
    names it, and the loosening is never applied."""
    before = active_sha(client, tokens)
    p = propose(client, team, default_document(max_per_payout_sat=60_000_000))
    t0 = aligned_now()
    approve(runtime, team.members["bob"], p["approval_request_id"], t0)
    if edit == "lock shortened":
        approve(runtime, team.members["carol"], p["approval_request_id"], t0)
        assert verify_audit(runtime).ok
        values: dict[str, Any] = {"effective_at": t0, "effective_height": 0}
    else:
        values = {"status": "time_locked", "effective_at": t0, "effective_height": 0}
    with runtime.db.engine.begin() as conn:
        conn.execute(update(PolicyProposal).where(PolicyProposal.id == p["id"]).values(**values))
    problem = f"time-locked policy proposal {p['id']} fails its integrity tag"
    assert problem in verify_audit(runtime).problems
    runtime.governance_tick(now=t0 + timedelta(minutes=1))
    assert active_sha(client, tokens) == before
    assert proposal(client, tokens, p["id"])["status"] == "failed"
    failed = [d for _, action, d in audit(runtime) if action == "policy.proposal_failed"]
    assert failed == [{"reason": problem}]
