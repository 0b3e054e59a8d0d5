"""Treasury staff: accounts, argon2 passwords, and the TOTP step-up checked by the signer.

The TOTP secrets live in the signer (walletsvc.signer.people), sealed under its key: the
signer makes a new member's secret when the service enrols them, answers it once (shown to
the member for the otpauth:// URI, never stored here) and verifies every code itself, each
time step once per member. The service keeps the account's lockout counters in front of it.
Secrets handled here never reach logs, audit data or exception messages; the password is
hashed with argon2id at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import utcnow
from walletsvc.db.models_governance import Staff
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import staff_message
from walletsvc.domain.access import ROLES
from walletsvc.domain.errors import (
    AccountLocked,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    StepUpFailed,
    StepUpReplayed,
)
from walletsvc.domain.ports import SignerPort
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import GOVERNED_ACTIONS, PolicyDocument

TOTP_PERIOD_S = 30
TOTP_DIGITS = 6
ISSUER = "walletsvc"
MIN_PASSWORD_LENGTH = 12
USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
GROUP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

# argon2id with the library's RFC 9106 "low memory" defaults (64 MiB, t=3, p=4).
_hasher = PasswordHasher()
# Verified against when the username is unknown, so a miss costs as much as a hit.
_DUMMY_HASH = _hasher.hash("walletsvc-no-such-user")


@dataclass(frozen=True)
class StaffPrincipal:
    """A logged-in staff member, as the API sees them."""

    staff_id: str
    username: str
    role: str
    groups: frozenset[str]
    session_id: str | None = None

    @property
    def actor(self) -> str:
        return f"staff:{self.username}"


@dataclass(frozen=True)
class CreatedStaff:
    staff_id: str
    username: str
    role: str
    groups: list[str]
    totp_secret: str  # one-time output from the signer: shown to the new member, never stored
    otpauth_uri: str


# --- Integrity tags and secret storage -------------------------------------------------------


def tag_staff(tags: RowTagger, row: Staff) -> None:
    row.mac = tags.tag(staff_message(row))


def staff_is_genuine(tags: RowTagger, row: Staff) -> bool:
    return tags.verify(staff_message(row), row.mac)


# --- Accounts --------------------------------------------------------------------------------


def check_new_staff(username: str, password: str, role: str, groups: list[str]) -> None:
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            "username: lower-case letters, digits, '.', '_', '-'; 1-64 characters",
            field="username",
        )
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    bad = [g for g in groups if not GROUP_RE.match(g)]
    if bad:
        raise InvalidInput(f"invalid group name(s): {', '.join(bad)}", field="group")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )


def create_staff(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    username: str,
    password: str,
    role: str,
    groups: list[str],
    actor: str,
) -> CreatedStaff:
    """A new member: the row here, the enrolment (and the TOTP secret) in the signer, in the
    same transaction (a refusal of the signer, e.g. after genesis without quorum evidence,
    leaves no row)."""
    check_new_staff(username, password, role, groups)
    password_hash = _hasher.hash(password)  # slow by design: outside the write lock
    with db.write() as uow:
        if uow.staff.by_username(username) is not None:
            raise Conflict(f"staff member {username!r} exists already", field="username")
        check_groups_in_policy(uow, tags, groups)
        row = Staff(
            username=username,
            role=role,
            groups=sorted(set(groups)),
            password_hash=password_hash,
            failed_attempts=0,
            mac="",
        )
        uow.staff.add(row, flush=True)
        tag_staff(tags, row)
        enrolment = signer.enrol_staff(
            staff_id=row.id, username=username, role=role, groups=row.groups
        )
        uow.audit(
            actor,
            "staff.created",
            "staff",
            row.id,
            {"username": username, "role": role, "groups": row.groups, "enrolled": "signer"},
        )
    if enrolment.totp_secret is None or enrolment.otpauth_uri is None:
        raise IntegrityFailure(f"the signer knew staff member {row.id} already")
    return CreatedStaff(
        row.id, username, role, list(row.groups), enrolment.totp_secret, enrolment.otpauth_uri
    )


def policy_groups(document: PolicyDocument) -> set[str]:
    """Every approval group a policy names (tiers, governed actions, allowlist, risk rules)."""
    groups = {tier.group for tier in document.approval_tiers}
    groups |= {document.quorum_for(action).group for action in GOVERNED_ACTIONS}
    if document.allowlist is not None and document.allowlist.approval is not None:
        groups.add(document.allowlist.approval.group)
    for rule in document.risk.rules if document.risk else ():
        if rule.approval is not None:
            groups.add(rule.approval.group)
    return groups


def known_groups(uow: ReadUnitOfWork, tags: RowTagger) -> set[str]:
    """The groups of the policies in force (the default and every wallet's own)."""
    groups = policy_groups(active_policy(uow, tags, None).document)
    for wallet in uow.wallets.all_by_name():
        groups |= policy_groups(active_policy(uow, tags, wallet).document)
    return groups


def check_groups_in_policy(uow: ReadUnitOfWork, tags: RowTagger, groups: list[str]) -> None:
    """A group no policy names is a typo (``tresury``): its member could never approve."""
    if not groups:
        return
    known = known_groups(uow, tags)
    unknown = sorted(set(groups) - known)
    if unknown:
        raise InvalidInput(
            f"unknown group(s) {', '.join(unknown)}: the policy in force names only"
            f" {', '.join(sorted(known))}",
            field="group",
        )


def list_staff(uow: ReadUnitOfWork) -> list[Staff]:
    return uow.staff.all_by_username()


def get_staff_by_name(uow: ReadUnitOfWork, username: str) -> Staff:
    row = uow.staff.by_username(username)
    if row is None:
        raise NotFound(f"no staff member {username!r}", field="username")
    return row


def disable_staff(
    db: Database, tags: RowTagger, signer: SignerPort, *, username: str, actor: str
) -> None:
    """Disable at once: the signer first (its decisions stop counting there, even if the
    database says otherwise later), then the account here; its sessions end now."""
    with db.read() as uow:
        staff_id = get_staff_by_name(uow, username).id
    signer.disable_staff(staff_id)
    with db.write() as uow:
        row = get_staff_by_name(uow, username)
        now = utcnow()
        if row.disabled_at is None:
            row.disabled_at = now
            tag_staff(tags, row)
        revoked = uow.staff_sessions.revoke_all_of(row.id, now)
        uow.audit(
            actor,
            "staff.disabled",
            "staff",
            row.id,
            {"username": username, "sessions_revoked": revoked},
        )


def change_password(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    settings: Settings,
    staff: StaffPrincipal,
    *,
    current: str,
    new: str,
    totp: str,
    now: datetime | None = None,
) -> None:
    """A staff member changes their own password: the current one and a fresh TOTP code.
    Their other sessions end (whoever else held one knew the old password)."""
    if len(new) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the new password must have at least {MIN_PASSWORD_LENGTH} characters",
            field="new_password",
        )
    with db.read() as uow:
        current_ok = verify_password(uow.staff.get(staff.staff_id), current)
    new_hash = _hasher.hash(new)  # slow by design: outside the write lock
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        row = load_active_staff(uow, tags, staff.staff_id)
        ensure_not_locked(uow, row, moment)
        if not current_ok:
            failed = record_failure(uow, settings, row, moment, "password_wrong")
            error = (
                failed
                if failed.code == "account_locked"
                else StepUpFailed("the current password is wrong", field="current_password")
            )
        else:
            _step, error = check_totp(uow, signer, settings, row, totp, moment)
        if error is None:
            row.password_hash = new_hash
            ended = uow.staff_sessions.revoke_others(row.id, staff.session_id, moment)
            uow.audit(
                staff.actor, "staff.password_changed", "staff", row.id, {"sessions_ended": ended}
            )
    if error is not None:
        raise error  # after the commit: the failed attempt is recorded


def principal_for(tags: RowTagger, row: Staff, session_id: str | None) -> StaffPrincipal:
    if not staff_is_genuine(tags, row):
        raise IntegrityFailure(f"staff member {row.username!r} fails its integrity check")
    return StaffPrincipal(row.id, row.username, row.role, frozenset(row.groups), session_id)


def hash_password(password: str) -> str:
    """argon2id, slow by design: call it outside the write lock."""
    return _hasher.hash(password)


def verify_password(row: Staff | None, password: str) -> bool:
    """Constant-ish time: an unknown user costs one argon2 verification too."""
    try:
        return _hasher.verify(row.password_hash if row else _DUMMY_HASH, password) and bool(row)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --- TOTP step-up ----------------------------------------------------------------------------


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // TOTP_PERIOD_S


def ensure_not_locked(uow: ReadUnitOfWork, row: Staff, now: datetime) -> None:
    if row.locked_until is not None and row.locked_until > now:
        raise AccountLocked(
            f"too many failed attempts; the account is locked until {row.locked_until.isoformat()}"
        )
    cleared = lock_cleared(uow, row, now)
    if cleared is not None:
        raise IntegrityFailure(cleared)


def lock_cleared(uow: ReadUnitOfWork, row: Staff, now: datetime) -> str | None:
    """Why ``row`` is unlocked though the audit log records a lock still running, or None.

    The lock fields change on every attempt, so they carry no tag; but every lock is audited
    (``staff.locked``) and nothing lifts one early, so a row that forgot a running lock was
    edited behind our back (someone clearing the lock to keep guessing codes)."""
    event = uow.audit_events.latest("staff.locked", row.id)
    if event is None:
        return None
    until = datetime.fromisoformat(str(event.data.get("locked_until")))
    if until <= now or (row.locked_until is not None and _aware(row.locked_until) >= until):
        return None
    return (
        f"staff member {row.id} is locked until {until.isoformat()} by audit event"
        f" {event.seq}, but its row no longer says so (the lock was cleared?)"
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def record_failure(
    uow: UnitOfWork, settings: Settings, row: Staff, now: datetime, reason: str
) -> DomainError:
    """Count a failed attempt (audited); lock the account at the limit. Returns the error."""
    row.failed_attempts += 1
    uow.audit(
        f"staff:{row.username}",
        "staff.auth_failed",
        "staff",
        row.id,
        {"reason": reason, "failed_attempts": row.failed_attempts},
    )
    if row.failed_attempts >= settings.totp_max_failures:
        row.locked_until = now + timedelta(seconds=settings.totp_lockout_s)
        row.failed_attempts = 0
        uow.audit(
            "system",
            "staff.locked",
            "staff",
            row.id,
            {
                "username": row.username,
                "locked_until": row.locked_until.isoformat(),
                "after_failures": settings.totp_max_failures,
            },
        )
        return AccountLocked(
            f"too many failed attempts; the account is locked until {row.locked_until.isoformat()}"
        )
    if reason == "totp_replayed":
        return StepUpFailed("this TOTP code was already used; wait for the next one", field="totp")
    return StepUpFailed("wrong TOTP code", field="totp")


def check_totp(
    uow: UnitOfWork,
    signer: SignerPort,
    settings: Settings,
    row: Staff,
    code: str,
    now: datetime,
) -> tuple[int | None, DomainError | None]:
    """Have the signer verify a step-up code, inside the caller's write transaction.

    Returns (accepted step, None) or (None, error). On failure the attempt is recorded in this
    transaction, so the caller must let it commit and raise the error afterwards. The signer
    checks the code with its own clock and accepts each time step once per member (RFC 6238
    section 5.2); the step is kept here too, for the record.
    """
    ensure_not_locked(uow, row, now)
    try:
        step = signer.check_totp(row.id, code)
    except StepUpReplayed:
        return None, record_failure(uow, settings, row, now, "totp_replayed")
    except StepUpFailed:
        return None, record_failure(uow, settings, row, now, "totp_wrong")
    accepted(row, step)
    return step, None


def step_up_failed(
    uow: UnitOfWork, settings: Settings, row: Staff, now: datetime, error: StepUpFailed
) -> DomainError:
    """Count a step-up the signer refused (a wrong or replayed code, a passkey assertion
    that does not verify) toward the lockout; the error to answer."""
    if error.field == "passkey":
        counted = record_failure(uow, settings, row, now, "passkey_wrong")
        if isinstance(counted, AccountLocked):
            return counted
        return StepUpFailed(
            f"the passkey does not verify for this decision: {error.message}", field="passkey"
        )
    reason = "totp_replayed" if isinstance(error, StepUpReplayed) else "totp_wrong"
    return record_failure(uow, settings, row, now, reason)


def accepted(row: Staff, step: int | None) -> None:
    """A step-up the signer accepted: the failure counter starts again."""
    if step is not None:
        row.totp_last_step = step
    row.failed_attempts = 0


def load_active_staff(uow: UnitOfWork, tags: RowTagger, staff_id: str) -> Staff:
    row = uow.staff.get(staff_id)
    if row is None or row.disabled_at is not None:
        raise Forbidden("this staff account is disabled")
    if not staff_is_genuine(tags, row):
        raise IntegrityFailure(f"staff member {row.username!r} fails its integrity check")
    return row


def now_utc(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)
