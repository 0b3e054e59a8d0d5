"""Staff enrolment after the signer's genesis: a governed change the signer counts itself.

During genesis the service enrols staff in the signer on its own word; once genesis is
closed the signer wants the policy's ``policy_change`` quorum (2 of treasury in
policies/default.yaml) of decisions it recorded on the exact ``staff_change`` content.
"""

from __future__ import annotations

import pyotp
import pytest

from tests.governance_helpers import (
    PASSWORD,
    Team,
    aligned_now,
    assert_nowhere_in_database,
    decide,
    later,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import Conflict, Forbidden
from walletsvc.governance.approvals import Requester
from walletsvc.governance.sessions import login
from walletsvc.governance.staff import create_staff
from walletsvc.governance.staff_changes import apply_enrolment, request_enrolment


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob", "carol"):
        team.add(name)
    assert runtime.signer.close_genesis() is False  # the first staff are in
    return team


def test_after_genesis_a_member_is_enrolled_only_on_the_quorum_the_signer_counts(
    runtime: Runtime, team: Team
) -> None:
    with pytest.raises(Forbidden, match="genesis is closed"):
        create_staff(
            runtime.db,
            runtime.tags,
            runtime.signer,
            username="dave",
            password=PASSWORD,
            role="approver",
            groups=["treasury"],
            actor="test",
        )
    with runtime.db.read() as uow:
        assert uow.staff.by_username("dave") is None  # the refusal left no row

    pending = request_enrolment(
        runtime.db,
        runtime.tags,
        username="dave",
        password=PASSWORD,
        role="approver",
        groups=["treasury"],
        requester=Requester("cli:operator", None),
    )
    apply = {"change_id": pending.change_id, "actor": "cli:operator"}
    with pytest.raises(Conflict, match="pending_approval"):
        apply_enrolment(runtime.db, runtime.tags, runtime.signer, **apply)

    t0 = aligned_now()
    decide(runtime, team.members["alice"], pending.approval_request_id, t0)
    status = decide(runtime, team.members["bob"], pending.approval_request_id, later(t0, 1))
    assert status == "approved"

    created = apply_enrolment(runtime.db, runtime.tags, runtime.signer, **apply)
    assert created.username == "dave" and created.otpauth_uri.startswith("otpauth://")
    assert_nowhere_in_database(runtime, created.totp_secret)
    t1 = later(t0, 2)
    session = login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="dave",
        password=PASSWORD,
        totp=pyotp.TOTP(created.totp_secret).at(t1),
        now=t1,
    )
    assert session.principal.role == "approver"
    # Applied once: neither the service nor the signer enrols on the same evidence again.
    with pytest.raises(Conflict, match="applied"):
        apply_enrolment(runtime.db, runtime.tags, runtime.signer, **apply)


def test_one_approval_is_not_enough_for_the_signer(runtime: Runtime, team: Team) -> None:
    """The service's row says approved (a database writer, or a bug): the signer still counts
    only the decisions it recorded, and refuses."""
    pending = request_enrolment(
        runtime.db,
        runtime.tags,
        username="erin",
        password=PASSWORD,
        role="approver",
        groups=["treasury"],
        requester=Requester("cli:operator", None),
    )
    decide(runtime, team.members["alice"], pending.approval_request_id, aligned_now())
    with runtime.db.write() as uow:
        row = uow.staff_changes.get(pending.change_id)
        assert row is not None
        row.status = "approved"
    with pytest.raises(Forbidden, match="needs 2 approvals"):
        apply_enrolment(
            runtime.db,
            runtime.tags,
            runtime.signer,
            change_id=pending.change_id,
            actor="cli:operator",
        )
    with runtime.db.read() as uow:
        assert uow.staff.by_username("erin") is None


def test_genesis_closes_at_service_start_once_the_approvers_meet_every_quorum(
    runtime: Runtime,
) -> None:
    """policies/default.yaml's largest quorum is 3 of treasury (its second tier)."""
    team = Team(runtime)
    team.add("alice")
    team.add("bob")
    assert runtime.close_genesis_when_ready() is True  # 2 approvers cannot meet 3 of treasury
    assert runtime.signer.status()["genesis_open"] is True
    team.add("carol")
    assert runtime.close_genesis_when_ready() is False
    assert runtime.signer.status()["genesis_open"] is False
