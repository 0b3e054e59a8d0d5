"""Staff administration after the signer's genesis, in the console: adding a member or giving
one more power is a governed ``staff_change`` (decided in "my queue", applied by an operator,
the enrolment's QR code shown once); taking power away applies at once."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.api.console.helpers import csrf_of, log_in
from tests.governance_helpers import PASSWORD, Team, aligned_now, decide, later, with_ops_group
from tests.helpers import verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import Forbidden
from walletsvc.governance.approvals import Requester
from walletsvc.governance.policies import IntegrityFailure
from walletsvc.governance.sessions import login
from walletsvc.governance.staff_changes import PendingStaffChange, apply_change, request_update


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    team.add("olga", role="operator", groups=())
    team.add("alice")
    team.add("bob")
    assert runtime.signer.close_genesis() is False  # from here on, the signer wants quorums
    return team


def _secret_in(page: str) -> str:
    uri = page.split("<code>otpauth://", 1)[1].split("</code>", 1)[0]
    return parse_qs(urlparse("otpauth://" + uri.replace("&amp;", "&")).query)["secret"][0]


def _request_id_in(page: str) -> str:
    return page.split("once approval request ", 1)[1].split(" ", 1)[0]


def _change_id(runtime: Runtime, username: str) -> str:
    with runtime.db.read() as uow:
        row = uow.staff_changes.open_for_username(username)
        assert row is not None
        return row.id


def _approve_in_console(client: TestClient, team: Team, name: str, request_id: str) -> str:
    """``name`` logs in, finds the request in their queue with its content and digest, and
    approves it with a TOTP code; returns the page."""
    client.cookies.clear()
    member = team.members[name]
    queue = log_in(client, member)
    article = queue.split(f'id="request-{request_id}"', 1)[1].split("</article>", 1)[0]
    assert "<h2>staff change" in article and '"kind": "staff_change"' in article
    digest = article.split('name="digest" value="', 1)[1].split('"', 1)[0]
    assert f'<code class="digest">{digest}</code>' in article
    decided = client.post(
        f"/console/approvals/{request_id}",
        data={
            "decision": "approve",
            "digest": digest,
            "totp": member.live_code(),
            "csrf_token": csrf_of(queue),
        },
    )
    assert decided.status_code == 200, decided.text
    return decided.text


def _as_operator(client: TestClient, team: Team) -> str:
    client.cookies.clear()
    log_in(client, team.members["olga"])
    return client.get("/console/staff").text


def test_after_genesis_a_member_is_added_through_a_governed_change_and_shown_once(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    page = _as_operator(client, team)
    asked = client.post(
        "/console/staff",
        data={
            "username": "dave",
            "password": PASSWORD,
            "role": "approver",
            "groups": ["treasury"],
            "csrf_token": csrf_of(page),
        },
    )
    assert asked.status_code == 201, asked.text
    assert "otpauth://" not in asked.text  # no secret exists yet: the signer makes it later
    request_id = _request_id_in(asked.text)
    change_id = _change_id(runtime, "dave")
    with runtime.db.read() as uow:
        assert uow.staff.by_username("dave") is None

    # Nothing to apply before the quorum; and the signer itself refuses an enrolment without
    # its quorum even when the database says the change is approved (a database writer).
    early = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert early.status_code == 409 and "pending_approval" in early.text
    with runtime.db.write() as uow:
        row = uow.staff_changes.get(change_id)
        assert row is not None
        row.status = "approved"
    refused = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert refused.status_code == 403 and "genesis is closed" in refused.text
    assert "otpauth://" not in refused.text
    with runtime.db.write() as uow:
        row = uow.staff_changes.get(change_id)
        assert row is not None and uow.staff.by_username("dave") is None
        row.status = "pending_approval"

    _approve_in_console(client, team, "alice", request_id)
    _approve_in_console(client, team, "bob", request_id)

    page = _as_operator(client, team)
    assert f'action="/console/staff/changes/{change_id}/apply"' in page
    applied = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert applied.status_code == 201, applied.text
    assert "<svg" in applied.text and 'class="segno"' in applied.text
    secret = _secret_in(applied.text)
    session = login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="dave",
        password=PASSWORD,
        totp=pyotp.TOTP(secret).now(),
    )
    assert session.principal.groups == frozenset({"treasury"})
    # Shown once: not on the page again, and the change applies once.
    page = client.get("/console/staff").text
    assert "otpauth://" not in page
    again = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert again.status_code == 409 and "otpauth://" not in again.text


def test_a_database_writer_cannot_set_a_pending_members_password(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    page = _as_operator(client, team)
    asked = client.post(
        "/console/staff",
        data={
            "username": "dave",
            "password": PASSWORD,
            "role": "auditor",
            "csrf_token": csrf_of(page),
        },
    )
    assert asked.status_code == 201, asked.text
    request_id = _request_id_in(asked.text)
    change_id = _change_id(runtime, "dave")
    assert verify_audit(runtime).problems == []
    with runtime.db.write() as uow:
        row = uow.staff_changes.get(change_id)
        assert row is not None
        row.password_hash = uow.staff.by_username("olga").password_hash  # type: ignore[union-attr]
    problems = verify_audit(runtime).problems
    assert f"open staff change {change_id} fails its integrity tag" in problems
    _approve_in_console(client, team, "alice", request_id)
    _approve_in_console(client, team, "bob", request_id)
    page = _as_operator(client, team)
    refused = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert refused.status_code >= 400
    assert "fails its integrity check" in refused.text and "otpauth://" not in refused.text
    with runtime.db.read() as uow:
        assert uow.staff.by_username("dave") is None


@pytest.fixture
def bigger_team(runtime: Runtime) -> Team:
    """Three treasury approvers (carol in ``ops`` too): a change of one of them can still reach
    the 2-of-treasury ``policy_change`` quorum without them."""
    with_ops_group(runtime)
    team = Team(runtime)
    team.add("olga", role="operator", groups=())
    team.add("alice")
    team.add("bob")
    team.add("carol", groups=("treasury", "ops"))
    assert runtime.signer.close_genesis() is False
    return team


def _in_signer(runtime: Runtime, username: str) -> tuple[str, list[str]]:
    from tests.conftest import RUNNING_SIGNERS

    core = RUNNING_SIGNERS[runtime.settings.signer_path].core
    (entry,) = [e for e in core.state.evidence.staff.values() if e.username == username]
    return entry.role, sorted(entry.groups)


def _in_database(runtime: Runtime, username: str) -> tuple[str, list[str]]:
    with runtime.db.read() as uow:
        row = uow.staff.by_username(username)
        assert row is not None
        return row.role, sorted(row.groups)


def test_more_power_waits_for_its_quorum_less_applies_at_once(
    client: TestClient, bigger_team: Team
) -> None:
    team, runtime = bigger_team, bigger_team.runtime
    page = _as_operator(client, team)
    typo = client.post(
        "/console/staff/alice/update",
        data={"role": "approver", "groups": ["treasury", "opps"], "csrf_token": csrf_of(page)},
    )
    assert typo.status_code == 422 and "unknown group(s) opps" in typo.text

    # A group more for alice: governed; nothing changes yet, here or in the signer.
    asked = client.post(
        "/console/staff/alice/update",
        data={"role": "approver", "groups": ["treasury", "ops"], "csrf_token": csrf_of(page)},
    )
    assert asked.status_code == 201, asked.text
    request_id = _request_id_in(asked.text)
    change_id = _change_id(runtime, "alice")
    assert (
        _in_database(runtime, "alice")
        == _in_signer(runtime, "alice")
        == (
            "approver",
            ["treasury"],
        )
    )
    # The service cannot do it on its own word: the signer wants its quorum.
    with pytest.raises(Forbidden, match="genesis is closed"):
        runtime.signer.enrol_staff(
            staff_id=team.members["alice"].staff_id,
            username="alice",
            role="approver",
            groups=["ops", "treasury"],
        )
    _approve_in_console(client, team, "bob", request_id)
    _approve_in_console(client, team, "carol", request_id)
    page = _as_operator(client, team)
    applied = client.post(
        f"/console/staff/changes/{change_id}/apply", data={"csrf_token": csrf_of(page)}
    )
    assert applied.status_code == 200, applied.text
    assert "alice is now approver (ops, treasury)" in applied.text
    assert (
        _in_database(runtime, "alice")
        == _in_signer(runtime, "alice")
        == (
            "approver",
            ["ops", "treasury"],
        )
    )

    # Less power (carol gives up being an approver, and her groups): at once, on one word.
    page = client.get("/console/staff").text
    tightened = client.post(
        "/console/staff/carol/update",
        data={"role": "operator", "groups": [], "csrf_token": csrf_of(page)},
    )
    assert tightened.status_code == 200, tightened.text
    assert "carol is now operator (no groups); sessions ended." in tightened.text
    assert _in_database(runtime, "carol") == _in_signer(runtime, "carol") == ("operator", [])
    with runtime.db.read() as uow:
        assert uow.staff_changes.open_for_username("carol") is None
    assert verify_audit(runtime).problems == []


def test_an_applied_change_must_be_what_its_approvers_decided(
    runtime: Runtime, bigger_team: Team
) -> None:
    """A database writer rewrites an approved change's groups: its tag fails at apply."""
    team = bigger_team
    pending = request_update(
        runtime.db,
        runtime.tags,
        runtime.signer,
        username="bob",
        role="approver",
        groups=["treasury", "ops"],
        requester=Requester("cli:operator", None),
    )
    assert isinstance(pending, PendingStaffChange)
    t0 = aligned_now()
    decide(runtime, team.members["alice"], pending.approval_request_id, t0)
    assert decide(runtime, team.members["carol"], pending.approval_request_id, later(t0, 1)) == (
        "approved"
    )
    with runtime.db.write() as uow:
        row = uow.staff_changes.get(pending.change_id)
        assert row is not None
        row.role = "operator"
    with pytest.raises(IntegrityFailure, match="fails its integrity check"):
        apply_change(
            runtime.db, runtime.tags, runtime.signer, change_id=pending.change_id, actor="test"
        )
    assert _in_database(runtime, "bob") == ("approver", ["treasury"])
