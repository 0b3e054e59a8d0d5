"""`walletsvc staff add|update|apply|list|disable`: treasury staff accounts.

The TOTP secret is made by the signer, which keeps it sealed under its own key; it is printed
once, as an otpauth:// URI and as a QR code (segno, drawn with Unicode blocks in the
terminal) for an authenticator app, and the database never holds it. After the signer's
genesis closed, enrolling a member or giving one more power (`update`) needs a quorum
recorded in the signer: the command opens the governed change and `apply` applies it once
approved (docs/runbook.md); taking power away applies at once. Groups must be groups of the
policy in force (a typo is refused).
"""

from __future__ import annotations

import io
import sys
from typing import Annotated

import typer

from walletsvc.cli.conventions import operator_actor
from walletsvc.config import Settings
from walletsvc.domain.access import ROLES
from walletsvc.domain.errors import DomainError

staff_app = typer.Typer(
    no_args_is_help=True, help="Treasury staff (approvers, operators, auditors)."
)
CLI_ACTOR = operator_actor()


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line from stdin (scripts, tests); the trailing newline is not part of it.
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@staff_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Username (lower case)")],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}")],
    group: Annotated[
        list[str] | None,
        typer.Option(
            help="Approval group (approvers); repeat for several. The groups are those the "
            "active policy names in its approval tiers (`GET /v1/policy`), e.g. treasury"
        ),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin")
    ] = False,
) -> None:
    """Create a staff member; prints the TOTP provisioning URI once. After the signer's
    genesis, opens a governed enrolment instead (then `walletsvc staff apply`)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.cli.dev_signer import running_dev_signer
    from walletsvc.governance.approvals import Requester
    from walletsvc.governance.staff import create_staff
    from walletsvc.governance.staff_changes import request_enrolment
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    s = Settings()
    password = _read_password(password_stdin)
    kek = load_kek(s.kek_path)
    try:
        with running_dev_signer(s):  # the signer enrols (and makes the secret)
            signer = SignerClient(s)
            if not signer.status().get("genesis_open", True):
                pending = request_enrolment(
                    open_database(s),
                    kek.row_tagger(),
                    username=name,
                    password=password,
                    role=role,
                    groups=group or [],
                    requester=Requester(CLI_ACTOR, None),
                )
                typer.echo(
                    f"the signer's genesis is closed: enrolling {name} needs the policy_change "
                    f"quorum (approval request {pending.approval_request_id}); once approved:"
                )
                typer.echo(f"walletsvc staff apply {pending.change_id}")
                return
            created = create_staff(
                open_database(s),
                kek.row_tagger(),
                signer,
                username=name,
                password=password,
                role=role,
                groups=group or [],
                actor=CLI_ACTOR,
            )
    except DomainError as exc:
        _fail(exc.message)
        return
    _show_enrolment(created.username, created.role, created.groups, created.otpauth_uri)


@staff_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="Username")],
    role: Annotated[
        str | None, typer.Option(help=f"New role, one of: {', '.join(ROLES)} (default: kept)")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="The member's groups from now on; repeat for several (default: kept)"),
    ] = None,
    no_groups: Annotated[
        bool, typer.Option("--no-groups", help="Remove the member from every group")
    ] = False,
) -> None:
    """Change a member's role or groups. Taking power away applies at once; more power, after
    the signer's genesis, opens a governed change (then `walletsvc staff apply`)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.cli.dev_signer import running_dev_signer
    from walletsvc.governance.approvals import Requester
    from walletsvc.governance.staff_changes import PendingStaffChange, request_update
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    if no_groups and group:
        _fail("give --group or --no-groups, not both")
    s = Settings()
    try:
        with running_dev_signer(s):
            outcome = request_update(
                open_database(s),
                load_kek(s.kek_path).row_tagger(),
                SignerClient(s),
                username=name,
                role=role,
                groups=[] if no_groups else group,
                requester=Requester(CLI_ACTOR, None),
            )
    except DomainError as exc:
        _fail(exc.message)
        return
    if isinstance(outcome, PendingStaffChange):
        typer.echo(
            f"changing {name} needs the policy_change quorum (approval request "
            f"{outcome.approval_request_id}); once approved:"
        )
        typer.echo(f"walletsvc staff apply {outcome.change_id}")
        return
    typer.echo(f"staff {name} is now {outcome.role} (groups: {','.join(outcome.groups)})")


@staff_app.command("apply")
def apply(change_id: str) -> None:
    """Apply an approved staff change (after genesis); an enrolment prints the TOTP
    provisioning URI once."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.cli.dev_signer import running_dev_signer
    from walletsvc.governance.staff_changes import apply_change
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    s = Settings()
    try:
        with running_dev_signer(s):
            applied = apply_change(
                open_database(s),
                load_kek(s.kek_path).row_tagger(),
                SignerClient(s),
                change_id=change_id,
                actor=CLI_ACTOR,
            )
    except DomainError as exc:
        _fail(exc.message)
        return
    member = applied.member
    if applied.created is None:
        typer.echo(
            f"staff {member.username} is now {member.role} (groups: {','.join(member.groups)})"
        )
        return
    _show_enrolment(member.username, member.role, member.groups, applied.created.otpauth_uri)


def _show_enrolment(username: str, role: str, groups: list[str], uri: str) -> None:
    typer.echo(f"staff {username} ({role}; groups: {','.join(groups)})")
    typer.echo("Add this to the authenticator app now; it is shown once and never again:")
    typer.echo(uri)
    typer.echo(terminal_qr(uri))


def terminal_qr(text: str) -> str:
    """``text`` as a QR code in Unicode half blocks (scan it from the screen)."""
    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()


@staff_app.command("list")
def list_() -> None:
    """Staff members with role, groups and state (no secrets)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance.staff import list_staff

    db = open_database(Settings())
    with db.read() as uow:
        rows = list_staff(uow)
        if not rows:
            typer.echo("no staff yet (add one with `walletsvc staff add`)")
        for row in rows:
            state = "disabled" if row.disabled_at else "active"
            typer.echo(f"{row.username:24} {row.role:9} {state:8} {','.join(row.groups)}")


@staff_app.command("disable")
def disable(name: str) -> None:
    """Disable a staff member at once; their sessions end now."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.cli.dev_signer import running_dev_signer
    from walletsvc.governance.staff import disable_staff
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    s = Settings()
    try:
        with running_dev_signer(s):  # the signer hears it first
            disable_staff(
                open_database(s),
                load_kek(s.kek_path).row_tagger(),
                SignerClient(s),
                username=name,
                actor=CLI_ACTOR,
            )
    except DomainError as exc:
        _fail(exc.message)
    typer.echo(f"disabled {name}")
