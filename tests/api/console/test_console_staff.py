"""Staff administration in the console: enrolment with a QR code, groups checked against the
policy, disabling, a governed authenticator reset, one's own password, quorum warnings."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.api.console.helpers import csrf_of, log_in
from tests.governance_helpers import PASSWORD, Member, Team, shown_digest
from tests.governance_helpers import principal as governance_principal
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import InvalidCredentials
from walletsvc.governance import approvals
from walletsvc.governance.sessions import CreatedSession, authenticate_session, login
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident.freeze import freeze
from walletsvc.incident.unfreeze import Requester, Target, propose


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    team.add("olga", role="operator", groups=())
    team.add("alice")
    team.add("bob")
    return team


def _secret_in(page: str) -> str:
    uri = page.split("<code>otpauth://", 1)[1].split("</code>", 1)[0]
    return parse_qs(urlparse("otpauth://" + uri.replace("&amp;", "&")).query)["secret"][0]


def test_an_operator_adds_a_member_who_enrols_from_the_qr_code(
    client: TestClient, team: Team
) -> None:
    page = log_in(client, team.members["olga"])
    added = client.post(
        "/console/staff",
        data={
            "username": "carol",
            "password": PASSWORD,
            "role": "approver",
            "groups": ["treasury"],
            "csrf_token": csrf_of(page),
        },
    )
    assert added.status_code == 201, added.text
    assert "<svg" in added.text and 'class="segno"' in added.text
    secret = _secret_in(added.text)
    runtime = team.runtime
    created = login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="carol",
        password=PASSWORD,
        totp=pyotp.TOTP(secret).now(),
    )
    assert created.principal.groups == frozenset({"treasury"})
    # The enrolment is shown once: the staff page never shows it again.
    assert "otpauth://" not in client.get("/console/staff").text


def test_a_group_the_policy_does_not_name_is_refused(client: TestClient, team: Team) -> None:
    page = log_in(client, team.members["olga"])
    refused = client.post(
        "/console/staff",
        data={
            "username": "carol",
            "password": PASSWORD,
            "role": "approver",
            "groups": ["tresury"],
            "csrf_token": csrf_of(page),
        },
    )
    assert refused.status_code == 422
    assert "unknown group(s) tresury" in refused.text and "(field: group)" in refused.text
    with team.runtime.db.read() as uow:
        assert uow.staff.by_username("carol") is None


def test_only_operators_administer_staff(client: TestClient, team: Team) -> None:
    page = log_in(client, team.members["alice"])
    refused = client.post("/console/staff/bob/disable", data={"csrf_token": csrf_of(page)})
    assert refused.status_code == 403
    with team.runtime.db.read() as uow:
        bob = uow.staff.by_username("bob")
        assert bob is not None and bob.disabled_at is None


def test_disabling_a_member_ends_their_sessions(client: TestClient, team: Team) -> None:
    bob = team.login(team.members["bob"])
    page = log_in(client, team.members["olga"])
    done = client.post("/console/staff/bob/disable", data={"csrf_token": csrf_of(page)})
    assert done.status_code == 200 and "Disabled bob" in done.text
    assert bob.token is not None
    with pytest.raises(Exception, match="invalid, expired or ended"):
        authenticate_session(team.runtime.db, team.runtime.tags, bob.token)


def test_quorum_warnings_name_what_cannot_be_approved(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    log_in(client, team.members["olga"])
    shown = client.get("/console/staff").text
    # Two treasury approvers, 2-of-2 for an unfreeze: one of them asking can never pass.
    assert "unfreeze needs 2 of group &#39;treasury&#39;, which has 2" in shown
    assert "if one of them asks, it can never be approved" in shown

    freeze(runtime.db, scope="all", wallet=None, reason="drill", actor="test")
    alice = team.members["alice"]
    propose(
        runtime.db,
        runtime.tags,
        target=Target(),
        reason="drill over",
        requester=Requester("staff:alice", alice.staff_id),
    )
    client.cookies.clear()
    queue = log_in(client, team.members["bob"])
    assert "cannot reach its quorum" in queue


def _approve(team: Team, member: Member, request_id: str) -> str:
    runtime = team.runtime
    return approvals.decide(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        request_id=request_id,
        staff=governance_principal(runtime, member),
        decision="approve",
        digest=shown_digest(runtime, request_id),
        totp=member.live_code(),
        comment=None,
    )


def test_a_lost_authenticator_is_replaced_only_after_a_quorum(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    carol = team.add("carol")
    alice = team.members["alice"]
    page = log_in(client, team.members["olga"])
    asked = client.post(
        "/console/staff/alice/reset-authenticator",
        data={"reason": "phone lost", "csrf_token": csrf_of(page)},
    )
    assert asked.status_code == 201, asked.text
    assert "otpauth://" not in asked.text  # no secret exists yet: the signer makes it later
    request_id = asked.text.split("once approval request ", 1)[1].split(" ", 1)[0]

    # Nobody decides a request about their own account.
    with pytest.raises(Exception, match="their own account"):
        _approve(team, alice, request_id)
    with runtime.db.read() as uow:
        pending = approvals.list_requests(
            uow, pending=True, kind=None, limit=10,
            waiting_for=_principal(team, alice),
        )  # fmt: skip
        assert pending == []

    assert _approve(team, team.members["bob"], request_id) == "pending"
    with runtime.db.read() as uow:
        reset_id = uow.staff_totp_resets.newest(1)[0].id
    # Until the quorum, nothing to apply.
    page = client.get("/console/staff").text
    early = client.post(
        f"/console/staff/resets/{reset_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert early.status_code == 409 and "otpauth://" not in early.text
    assert _approve(team, carol, request_id) == "approved"
    page = client.get("/console/staff").text
    applied = client.post(
        f"/console/staff/resets/{reset_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert applied.status_code == 201, applied.text
    new_secret = _secret_in(applied.text)
    assert new_secret != alice.secret
    session = _login_with(runtime, "alice", pyotp.TOTP(new_secret).now())
    assert session.principal.username == "alice"
    # The old authenticator no longer opens anything; the reset applies once.
    with pytest.raises(InvalidCredentials):
        _login_with(runtime, "alice", pyotp.TOTP(alice.secret).now())
    page = client.get("/console/staff").text
    again = client.post(
        f"/console/staff/resets/{reset_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert again.status_code == 409
    shown = client.get("/console/staff").text
    assert "phone lost" in shown and "applied" in shown


def test_a_member_changes_their_own_password(client: TestClient, team: Team) -> None:
    alice = team.members["alice"]
    other = team.login(alice)
    page = log_in(client, alice)
    wrong = client.post(
        "/console/password",
        data={
            "current_password": "not it",
            "new_password": "a much longer new password",
            "totp": alice.live_code(),
            "csrf_token": csrf_of(page),
        },
    )
    assert wrong.status_code == 403 and "current password is wrong" in wrong.text
    changed = client.post(
        "/console/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a much longer new password",
            "totp": alice.live_code(),
            "csrf_token": csrf_of(page),
        },
    )
    assert changed.status_code == 200, changed.text
    runtime = team.runtime
    assert other.token is not None
    with pytest.raises(Exception, match="invalid, expired or ended"):
        authenticate_session(runtime.db, runtime.tags, other.token)
    assert client.get("/console/queue").status_code == 200  # this session goes on


def _principal(team: Team, member: Member) -> StaffPrincipal:
    principal: StaffPrincipal = governance_principal(team.runtime, member)
    return principal


def _login_with(runtime: Runtime, username: str, code: str) -> CreatedSession:
    return login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username=username,
        password=PASSWORD,
        totp=code,
    )
