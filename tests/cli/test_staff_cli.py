"""`walletsvc staff add|list|disable` against a real database and KEK, plus the staff service."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.governance_helpers import (
    PASSWORD,
    aligned_now,
    assert_nowhere_in_database,
    later,
    with_ops_group,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.cli.main import app
from walletsvc.db.models import AuditEvent
from walletsvc.db.models_governance import Staff, StaffSession
from walletsvc.domain.errors import Conflict, InvalidCredentials, InvalidInput
from walletsvc.governance.sessions import check_password, login
from walletsvc.governance.staff import create_staff


@pytest.fixture
def cli_env(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    s = runtime.settings
    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("WALLETSVC_DATABASE_URL", s.database_url)
    monkeypatch.setenv("WALLETSVC_KEK_FILE", str(s.kek_path))
    return runtime


def test_add_prints_the_uri_once_and_the_database_never_holds_the_secret(
    cli_env: Runtime,
) -> None:
    with_ops_group(cli_env)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "staff",
            "add",
            "alice",
            "--role",
            "approver",
            "--group",
            "treasury",
            "--group",
            "ops",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    uri = next(line for line in result.output.splitlines() if line.startswith("otpauth://"))
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    assert parsed.netloc == "totp" and query["issuer"] == ["walletsvc"]
    secret = query["secret"][0]
    assert "▀" in result.output or "▄" in result.output  # the QR code, in the terminal

    with cli_env.db.read() as uow:
        session = uow.session
        row = session.scalar(select(Staff).where(Staff.username == "alice"))
        assert row is not None
        assert (row.role, row.groups) == ("approver", ["ops", "treasury"])
        audit = json.dumps([e.data for e in session.scalars(select(AuditEvent))], default=str)
    assert secret not in audit and PASSWORD not in audit
    assert_nowhere_in_database(cli_env, secret)  # the signer holds it, sealed under its key

    # The printed secret works: a real code logs in.
    t0 = aligned_now()
    created = login(
        cli_env.db,
        cli_env.tags,
        cli_env.signer,
        cli_env.settings,
        username="alice",
        password=PASSWORD,
        totp=pyotp.TOTP(secret).at(t0),
        now=t0,
    )
    assert created.principal.groups == frozenset({"ops", "treasury"})

    listed = runner.invoke(app, ["staff", "list"])
    assert "alice" in listed.output and secret not in listed.output
    assert "otpauth" not in listed.output


def test_disable_revokes_at_once(cli_env: Runtime) -> None:
    created = create_staff(
        cli_env.db,
        cli_env.tags,
        cli_env.signer,
        username="bob",
        password=PASSWORD,
        role="approver",
        groups=["treasury"],
        actor="test",
    )
    t0 = aligned_now()
    login(
        cli_env.db,
        cli_env.tags,
        cli_env.signer,
        cli_env.settings,
        username="bob",
        password=PASSWORD,
        totp=pyotp.TOTP(created.totp_secret).at(t0),
        now=t0,
    )
    result = CliRunner().invoke(app, ["staff", "disable", "bob"])
    assert result.exit_code == 0, result.output
    with cli_env.db.read() as uow:
        session = uow.session
        sessions = list(session.scalars(select(StaffSession)))
        assert sessions and all(s.revoked_at is not None for s in sessions)
    with pytest.raises(InvalidCredentials):
        login(
            cli_env.db,
            cli_env.tags,
            cli_env.signer,
            cli_env.settings,
            username="bob",
            password=PASSWORD,
            totp=pyotp.TOTP(created.totp_secret).at(later(t0, 2)),
            now=later(t0, 2),
        )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "Bad Name"}, "username"),
        ({"role": "root"}, "role"),
        ({"groups": ["Treasury!"]}, "group"),
        ({"password": "short"}, "password"),
    ],
)
def test_bad_staff_input_is_refused(
    runtime: Runtime, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "username": "carol",
        "password": PASSWORD,
        "role": "approver",
        "groups": ["treasury"],
        **kwargs,
    }
    with pytest.raises(InvalidInput) as caught:
        create_staff(runtime.db, runtime.tags, runtime.signer, actor="test", **args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert PASSWORD not in caught.value.message


def test_usernames_are_unique(runtime: Runtime) -> None:
    create_staff(
        runtime.db,
        runtime.tags,
        runtime.signer,
        username="dan",
        password=PASSWORD,
        role="auditor",
        groups=[],
        actor="test",
    )
    with pytest.raises(Conflict):
        create_staff(
            runtime.db,
            runtime.tags,
            runtime.signer,
            username="dan",
            password=PASSWORD,
            role="auditor",
            groups=[],
            actor="test",
        )


def test_the_cli_checks_passwords_with_the_login_check(cli_env: Runtime) -> None:
    """`walletsvc approve` asks for the password through governance.sessions.check_password:
    a wrong one is refused and counts toward the lockout exactly as a failed API login."""
    created = create_staff(
        cli_env.db,
        cli_env.tags,
        cli_env.signer,
        username="carol",
        password=PASSWORD,
        role="approver",
        groups=["treasury"],
        actor="test",
    )
    principal = check_password(
        cli_env.db, cli_env.tags, cli_env.settings, username="carol", password=PASSWORD
    )
    assert (principal.staff_id, principal.role, principal.session_id) == (
        created.staff_id,
        "approver",
        None,
    )
    result = CliRunner().invoke(
        app,
        ["approve", "no-such-request", "--as", "carol", "--totp", "000000"],
        input="not the password\n",
    )
    assert result.exit_code != 0
    assert "invalid username, password or TOTP code" in result.output
    with cli_env.db.read() as uow:
        session = uow.session
        row = session.get(Staff, created.staff_id)
        assert row is not None and row.failed_attempts == 1
        failed = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "staff.auth_failed")
        ).all()
    assert [e.data["reason"] for e in failed] == ["password_wrong"]
    with pytest.raises(InvalidCredentials):
        check_password(
            cli_env.db, cli_env.tags, cli_env.settings, username="nobody", password=PASSWORD
        )


def test_a_group_the_policy_does_not_name_is_refused(cli_env: Runtime) -> None:
    result = CliRunner().invoke(
        app,
        ["staff", "add", "carol", "--role", "approver", "--group", "tresury", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 1
    assert "unknown group(s) tresury" in result.output and "treasury" in result.output
    with cli_env.db.read() as uow:
        assert uow.staff.by_username("carol") is None


def test_update_takes_power_away_at_once_and_governs_more(cli_env: Runtime) -> None:
    """After genesis: `staff update` removing groups/roles applies at once; adding a group
    opens the governed change that `staff apply` applies once its quorum is recorded."""
    from tests.governance_helpers import Team, decide

    with_ops_group(cli_env)
    team = Team(cli_env)
    for name in ("alice", "bob", "carol", "dave"):
        team.add(name)
    assert cli_env.signer.close_genesis() is False
    runner = CliRunner()

    typo = runner.invoke(app, ["staff", "update", "alice", "--group", "tresury"])
    assert typo.exit_code == 1 and "unknown group(s) tresury" in typo.output

    less = runner.invoke(app, ["staff", "update", "dave", "--role", "auditor", "--no-groups"])
    assert less.exit_code == 0, less.output
    assert "staff dave is now auditor (groups: )" in less.output

    more = runner.invoke(app, ["staff", "update", "alice", "--group", "treasury", "--group", "ops"])
    assert more.exit_code == 0, more.output
    apply_line = more.output.strip().splitlines()[-1]
    assert apply_line.startswith("walletsvc staff apply ")
    change_id = apply_line.split()[-1]
    early = runner.invoke(app, ["staff", "apply", change_id])
    assert early.exit_code == 1 and "pending_approval" in early.output

    with cli_env.db.read() as uow:
        request_id = uow.staff_changes.get(change_id).approval_request_id  # type: ignore[union-attr]
    assert request_id is not None
    t0 = aligned_now()
    decide(cli_env, team.members["bob"], request_id, t0)
    assert decide(cli_env, team.members["carol"], request_id, later(t0, 1)) == "approved"
    applied = runner.invoke(app, ["staff", "apply", change_id])
    assert applied.exit_code == 0, applied.output
    assert "staff alice is now approver (groups: ops,treasury)" in applied.output
    assert "otpauth://" not in applied.output  # an update keeps the authenticator
    with cli_env.db.read() as uow:
        dave, alice = uow.staff.by_username("dave"), uow.staff.by_username("alice")
        assert dave is not None and (dave.role, dave.groups) == ("auditor", [])
        assert alice is not None and alice.groups == ["ops", "treasury"]
