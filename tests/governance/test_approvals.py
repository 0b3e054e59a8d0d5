"""The approval mechanism at the service layer, on both databases, with injected time.

Codes are real RFC 6238 codes computed by pyotp from the secret the staff service returned;
time is injected (``now``) instead of sleeping through 30-second steps.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.conftest import SIGNER_CLOCK
from tests.governance_helpers import (
    PASSWORD,
    Team,
    aligned_now,
    big_withdrawal,
    decide,
    default_document,
    install,
    later,
    with_ops_group,
)
from tests.helpers import verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, Withdrawal
from walletsvc.db.models_governance import ApprovalDecision, ApprovalRequest, Staff
from walletsvc.db.tags import withdrawal_authorization_message
from walletsvc.domain.errors import AccountLocked, Conflict, Forbidden, StepUpFailed
from walletsvc.governance import approvals
from walletsvc.governance.policies import IntegrityFailure
from walletsvc.governance.sessions import login
from walletsvc.payouts.intake import cancel_withdrawal
from walletsvc.wallets.freezes import withdrawals_freeze


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob", "carol"):
        team.add(name)
    team.add("otto", role="operator")
    with_ops_group(runtime)
    team.add("eve", groups=("ops",))  # an approver, but not in treasury
    return team


def request_of(runtime: Runtime, withdrawal_id: str) -> ApprovalRequest:
    with runtime.db.read() as uow:
        request = approvals.request_for_subject(uow, "withdrawal", withdrawal_id)
        assert request is not None
        return request


def withdrawal(runtime: Runtime, withdrawal_id: str) -> Withdrawal:
    with runtime.db.read() as uow:
        session = uow.session
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        return row


def actions(runtime: Runtime, since: int = 0) -> list[str]:
    with runtime.db.read() as uow:
        session = uow.session
        return list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.seq > since).order_by(AuditEvent.seq)
            )
        )


def test_quorum_reached_approves_and_authorises_in_one_transaction(
    runtime: Runtime, team: Team
) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    assert withdrawal(runtime, wid).status == "pending_approval"
    assert (request.required_group, request.m, request.requester) == ("treasury", 2, "token:engine")
    assert request.expires_at == t0 + timedelta(hours=24)

    assert decide(runtime, team.members["alice"], request.id, t0) == "pending"
    assert withdrawal(runtime, wid).authorization_mac is None
    with runtime.db.read() as uow:
        session = uow.session
        seq = session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    assert decide(runtime, team.members["bob"], request.id, t0) == "approved"

    row = withdrawal(runtime, wid)
    assert row.status == "approved"
    assert row.authorization_mac is not None
    assert runtime.tags.verify(withdrawal_authorization_message(row), row.authorization_mac)
    # The final approval, the quorum and the status change are consecutive events of one
    # transaction.
    assert actions(runtime, seq or 0) == [
        "approval.approved",
        "approval.request_approved",
        "withdrawal.approved",
    ]
    with runtime.db.read() as uow:
        session = uow.session
        view = approvals.request_view(uow, runtime.tags, request_of(runtime, wid))
    assert view["approvals_counted"] == 2
    assert sorted(d["staff"] for d in view["decisions"]) == ["alice", "bob"]


def test_a_staff_member_never_approves_their_own_request(runtime: Runtime, team: Team) -> None:
    from walletsvc.governance.allowlist import Proposer, propose_entry

    t0 = aligned_now()
    alice = team.members["alice"]
    entry_id = propose_entry(
        runtime.db,
        runtime.tags,
        wallet="pool-hot",
        address="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        label="exchange",
        proposer=Proposer("staff:alice", alice.staff_id),
        now=t0,
    )
    with runtime.db.read() as uow:
        session = uow.session
        request = approvals.request_for_subject(uow, "allowlist_add", entry_id)
        assert request is not None
    with pytest.raises(Forbidden, match="own request"):
        decide(runtime, alice, request.id, t0)
    # Refused before the code was looked at: the step is not spent, nothing recorded.
    with runtime.db.read() as uow:
        session = uow.session
        assert session.scalar(select(ApprovalDecision.id)) is None


def test_one_person_counts_once(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    alice = team.members["alice"]
    decide(runtime, alice, request.id, t0)
    with pytest.raises(Conflict, match="already decided"):
        decide(runtime, alice, request.id, later(t0, 1))
    with runtime.db.read() as uow:
        assert approvals.tally(uow, runtime.tags, request).approvers == ("alice",)
    assert request_of(runtime, request.subject_id).status == "pending"


def test_a_replayed_code_is_refused_even_inside_its_window(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    alice = team.members["alice"]
    code = alice.code_at(t0)
    login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="alice",
        password="correct horse battery staple",
        totp=code,
        now=t0,
    )
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    for moment in (t0, t0 + timedelta(seconds=10), t0 + timedelta(seconds=29)):
        with pytest.raises(StepUpFailed, match="already used"):
            decide(runtime, alice, request.id, moment, totp=code)
    # An older (still in-window) code is refused too: steps only move forward.
    with pytest.raises(StepUpFailed):
        decide(runtime, alice, request.id, t0, totp=alice.code_at(later(t0, -1)))
    # The next step's code is fresh.
    assert decide(runtime, alice, request.id, later(t0, 1)) == "pending"


def test_wrong_codes_lock_the_account_and_the_lock_is_audited(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    alice = team.members["alice"]
    wrong = "000000" if alice.code_at(t0) != "000000" else "111111"
    for _ in range(4):
        with pytest.raises(StepUpFailed, match="wrong TOTP code"):
            decide(runtime, alice, request.id, t0, totp=wrong)
    with pytest.raises(AccountLocked):
        decide(runtime, alice, request.id, t0, totp=wrong)
    assert "staff.locked" in actions(runtime)
    with runtime.db.read() as uow:
        session = uow.session
        row = session.get(Staff, alice.staff_id)
        assert row is not None and row.locked_until == t0 + timedelta(minutes=15)
    # While locked even a right code is refused, and login too.
    with pytest.raises(AccountLocked):
        decide(runtime, alice, request.id, later(t0, 2))
    with pytest.raises(AccountLocked):
        login(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            username="alice",
            password="correct horse battery staple",
            totp=alice.code_at(later(t0, 3)),
            now=later(t0, 3),
        )
    after = t0 + timedelta(minutes=15, seconds=30)
    assert decide(runtime, alice, request.id, after) == "pending"


def test_a_rewritten_payout_is_never_rebound_and_freezes_its_wallet(
    runtime: Runtime, team: Team
) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    # Someone with database access rewrites the payout after alice approved it.
    with runtime.db.write() as uow:
        row = uow.session.get(Withdrawal, wid)
        assert row is not None
        row.amount_sat = 30_000_000
    # bob decides on the digest he was shown: refused, never re-bound.
    with pytest.raises(approvals.ContentTampered):
        decide(runtime, team.members["bob"], request.id, t0)
    after = request_of(runtime, wid)
    assert after.status == "pending"
    assert (after.digest, after.content) == (request.digest, request.content)
    assert "approval.digest_changed" not in actions(runtime)
    assert "integrity.failure" in actions(runtime)
    assert withdrawal(runtime, wid).status == "pending_approval"
    assert withdrawal(runtime, wid).authorization_mac is None
    # The risk monitor freezes the wallet on the audited integrity failure.
    runtime.risk.evaluate()
    with runtime.db.read() as uow:
        assert withdrawals_freeze(uow, withdrawal(runtime, wid).wallet_id) is not None


def test_a_decision_on_another_digest_is_refused(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    with pytest.raises(Conflict, match="digest you reviewed"):
        decide(runtime, team.members["alice"], request.id, t0, digest="ab" * 32)
    with runtime.db.read() as uow:
        assert uow.approval_decisions.has_decided(request, team.members["alice"].staff_id) is False
    assert decide(runtime, team.members["alice"], request.id, t0) == "pending"


def test_the_policy_is_evaluated_again_at_quorum(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    # While the payout waits, a stricter policy comes into force: 0.15 BTC per payout at most.
    install(runtime, default_document(max_per_payout_sat=15_000_000))
    assert decide(runtime, team.members["bob"], request.id, t0) == "approved"
    row = withdrawal(runtime, wid)
    assert (row.status, row.authorization_mac) == ("rejected", None)
    assert "withdrawal.denied_at_approval" in actions(runtime)


def test_a_payout_still_within_policy_is_approved_at_quorum(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    # Two payouts of 0.5 BTC fill the 1 BTC a day per destination exactly; each payout's
    # re-evaluation counts the other but not itself (as when it was requested).
    first = big_withdrawal(runtime, amount=50_000_000, now=t0)
    second = big_withdrawal(runtime, amount=50_000_000, key="big-2", now=t0)
    for step, wid in enumerate((first, second)):
        request = request_of(runtime, wid)
        decide(runtime, team.members["alice"], request.id, later(t0, step))
        assert decide(runtime, team.members["bob"], request.id, later(t0, step)) == "approved"
        assert withdrawal(runtime, wid).status == "approved"
    assert "withdrawal.denied_at_approval" not in actions(runtime)


@pytest.mark.parametrize("closed", ["rejected", "cancelled", "expired"])
def test_a_closed_payout_flipped_to_approved_in_the_database_is_detected_and_never_signed(
    runtime: Runtime, team: Team, closed: str
) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    if closed == "rejected":
        decide(runtime, team.members["alice"], request.id, t0, decision="reject")
    elif closed == "cancelled":
        cancel_withdrawal(runtime.db, wid, actor="token:engine")
    else:
        runtime.governance_tick(now=t0 + timedelta(hours=25))
    assert (request_of(runtime, wid).status, withdrawal(runtime, wid).status) == (closed, closed)
    with runtime.db.engine.begin() as conn:  # as a database writer would, with SQL
        conn.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request.id)
            .values(status="approved")
        )
        conn.execute(update(Withdrawal).where(Withdrawal.id == wid).values(status="approved"))
    problems = verify_audit(runtime).problems
    assert f"approved withdrawal {wid} fails its integrity tag" in problems
    assert (
        f"approval request {request.id} is approved without m genuine approvals"
        " (its status was edited?)" in problems
    )
    runtime.tick()
    row = withdrawal(runtime, wid)
    assert (row.status, row.transaction_id) == ("failed", None)
    assert "integrity.failure" in actions(runtime)


def test_a_staff_member_edited_in_the_database_is_refused_and_detected(
    runtime: Runtime, team: Team
) -> None:
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    alice = team.members["alice"]
    with runtime.db.engine.begin() as conn:  # a database writer widens alice's groups
        conn.execute(
            update(Staff).where(Staff.id == alice.staff_id).values(groups=["ops", "treasury"])
        )
    with pytest.raises(IntegrityFailure):
        decide(runtime, alice, request.id, t0)
    assert request_of(runtime, request.subject_id).status == "pending"
    assert (
        f"staff member {alice.staff_id} fails its integrity tag" in verify_audit(runtime).problems
    )


def test_expiry_expires_the_withdrawal(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    runtime.governance_tick(now=t0 + timedelta(hours=23))
    assert withdrawal(runtime, wid).status == "pending_approval"
    runtime.governance_tick(now=t0 + timedelta(hours=24, seconds=1))
    assert withdrawal(runtime, wid).status == "expired"
    assert request_of(runtime, wid).status == "expired"
    with pytest.raises(Conflict, match="expired"):
        decide(runtime, team.members["bob"], request.id, t0 + timedelta(hours=25))
    assert {"approval.request_expired", "withdrawal.expired"} <= set(actions(runtime))


def test_a_late_decision_expires_the_request_itself(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    late = t0 + timedelta(hours=24, minutes=1)
    with pytest.raises(Conflict, match="expired"):
        decide(runtime, team.members["alice"], request.id, late)
    assert withdrawal(runtime, wid).status == "expired"


def test_a_single_rejection_rejects(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    status = decide(
        runtime, team.members["bob"], request.id, t0, decision="reject", comment="unknown payee"
    )
    assert status == "rejected"
    assert withdrawal(runtime, wid).status == "rejected"
    with pytest.raises(Conflict):
        decide(runtime, team.members["carol"], request.id, t0)


def test_rejections_needed_is_configurable(runtime: Runtime, team: Team) -> None:
    runtime.settings.approval_rejections_to_reject = 2
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    assert decide(runtime, team.members["alice"], request.id, t0, decision="reject") == "pending"
    assert decide(runtime, team.members["bob"], request.id, t0, decision="reject") == "rejected"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("otto", "only approvers"), ("eve", "group 'treasury'")],
)
def test_only_approvers_of_the_required_group_decide(
    runtime: Runtime, team: Team, name: str, reason: str
) -> None:
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    member = team.members[name]
    with pytest.raises(Forbidden, match=reason):
        decide(runtime, member, request.id, t0)


def test_a_decision_forged_in_the_database_does_not_count(runtime: Runtime, team: Team) -> None:
    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    with runtime.db.write() as uow:  # someone with SQL access adds bob's "approval"
        uow.session.add(
            ApprovalDecision(
                request_id=request.id,
                staff_id=team.members["bob"].staff_id,
                decision="approve",
                digest=request.digest,
                totp_step=1,
                mac="0" * 64,
            )
        )
    with runtime.db.read() as uow:
        assert approvals.tally(uow, runtime.tags, request).approvers == ("alice",)
    # ... nor does lowering the quorum in the row (the request's tag no longer verifies).
    with runtime.db.write() as uow:
        row = uow.session.get(ApprovalRequest, request.id)
        assert row is not None
        row.m = 1
    from walletsvc.governance.policies import IntegrityFailure

    with pytest.raises(IntegrityFailure):
        decide(runtime, team.members["carol"], request.id, t0)
    assert withdrawal(runtime, wid).status == "pending_approval"


def test_a_disabled_approver_no_longer_counts(runtime: Runtime, team: Team) -> None:
    from walletsvc.governance.staff import disable_staff

    t0 = aligned_now()
    wid = big_withdrawal(runtime, now=t0)
    request = request_of(runtime, wid)
    decide(runtime, team.members["alice"], request.id, t0)
    disable_staff(runtime.db, runtime.tags, runtime.signer, username="alice", actor="test")
    assert decide(runtime, team.members["bob"], request.id, t0) == "pending"
    assert decide(runtime, team.members["carol"], request.id, t0) == "approved"


def test_a_decision_the_signer_kept_but_the_database_lost_can_be_retried(
    runtime: Runtime, team: Team
) -> None:
    """The signer recorded alice's approval, then the service's commit failed: her retry (with
    a new code) is answered as already recorded, consuming no code, and the row is written."""
    t0 = aligned_now()
    request = request_of(runtime, big_withdrawal(runtime, now=t0))
    alice = team.members["alice"]
    SIGNER_CLOCK.pinned = t0
    # What the signer saw before the service's transaction was lost: her decision, recorded.
    runtime.signer.record_decision(
        staff_id=alice.staff_id,
        kind=request.kind,
        content=request.content,
        decision="approve",
        totp=alice.code_at(t0),
    )
    with runtime.db.read() as uow:
        assert approvals.tally(uow, runtime.tags, request).approvers == ()
    # The other decision stays refused: a member decides a content once.
    with pytest.raises(Conflict, match="decided this content already"):
        decide(runtime, alice, request.id, later(t0, 1), decision="reject")
    t1 = later(t0, 1)
    assert decide(runtime, alice, request.id, t1) == "pending"
    with runtime.db.read() as uow:
        assert approvals.tally(uow, runtime.tags, request).approvers == ("alice",)
    # The retry spent no code: the code of t1 still opens a session for her.
    login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="alice",
        password=PASSWORD,
        totp=alice.code_at(t1),
        now=t1,
    )
