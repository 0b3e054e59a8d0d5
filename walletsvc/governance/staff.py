"""Treasury staff: accounts, argon2 passwords, encrypted TOTP secrets and the step-up check.

Secrets handled here never reach logs, audit data or exception messages: the password is
hashed with argon2id at once; the TOTP secret is returned once (for the otpauth:// URI) and
stored only sealed by a TotpSealer (walletsvc.keys.sealing), bound to the staff id.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
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
)
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.keys.errors import SealedSecretError
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.sealing import TotpSealer
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
    totp_secret: str  # one-time output: shown to the new staff member, never stored in clear
    otpauth_uri: str


# --- Integrity tags and secret storage -------------------------------------------------------


def tag_staff(tags: RowTagger, row: Staff) -> None:
    row.mac = tags.tag(staff_message(row))


def staff_is_genuine(tags: RowTagger, row: Staff) -> bool:
    return tags.verify(staff_message(row), row.mac)


def decrypt_totp_secret(totp_secrets: TotpSealer, staff_id: str, sealed: str) -> str:
    try:
        return totp_secrets.unseal(staff_id, sealed)
    except SealedSecretError as exc:
        raise IntegrityFailure(str(exc)) from None


# --- Accounts --------------------------------------------------------------------------------


def _check_new_staff(username: str, password: str, role: str, groups: list[str]) -> None:
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
    totp_secrets: TotpSealer,
    *,
    username: str,
    password: str,
    role: str,
    groups: list[str],
    actor: str,
) -> CreatedStaff:
    _check_new_staff(username, password, role, groups)
    secret = pyotp.random_base32()
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
            totp_secret_enc="",
            failed_attempts=0,
            mac="",
        )
        uow.staff.add(row, flush=True)
        row.totp_secret_enc = totp_secrets.seal(row.id, secret)
        tag_staff(tags, row)
        uow.audit(
            actor,
            "staff.created",
            "staff",
            row.id,
            {"username": username, "role": role, "groups": row.groups},
        )
    uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S).provisioning_uri(
        name=username, issuer_name=ISSUER
    )
    return CreatedStaff(row.id, username, role, list(row.groups), secret, uri)


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


def disable_staff(db: Database, tags: RowTagger, *, username: str, actor: str) -> None:
    """Disable at once: the account can no longer log in, and its sessions end now."""
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
    totp_secrets: TotpSealer,
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
            _step, error = check_totp(uow, totp_secrets, settings, row, totp, moment)
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


def _matching_step(secret: str, code: str, now: datetime, window: int) -> int | None:
    if not (isinstance(code, str) and len(code) == TOTP_DIGITS and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    current = time_step(now)
    # Newest first, so the highest matching step is the one recorded as used.
    for step in range(current + window, current - window - 1, -1):
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD_S), code):
            return step
    return None


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
    totp_secrets: TotpSealer,
    settings: Settings,
    row: Staff,
    code: str,
    now: datetime,
) -> tuple[int | None, DomainError | None]:
    """Verify a step-up code inside the caller's write transaction.

    Returns (accepted step, None) or (None, error). On failure the attempt is recorded in this
    transaction, so the caller must let it commit and raise the error afterwards.
    Why a per-account last step: RFC 6238 section 5.2 says a verifier must not accept the
    second attempt of the same OTP; storing the step makes that hold across the whole window.
    """
    ensure_not_locked(uow, row, now)
    secret = decrypt_totp_secret(totp_secrets, row.id, row.totp_secret_enc)
    step = _matching_step(secret, code, now, settings.totp_valid_window)
    if step is None:
        return None, record_failure(uow, settings, row, now, "totp_wrong")
    if row.totp_last_step is not None and step <= row.totp_last_step:
        return None, record_failure(uow, settings, row, now, "totp_replayed")
    row.totp_last_step = step
    row.failed_attempts = 0
    return step, None


def load_active_staff(uow: UnitOfWork, tags: RowTagger, staff_id: str) -> Staff:
    row = uow.staff.get(staff_id)
    if row is None or row.disabled_at is not None:
        raise Forbidden("this staff account is disabled")
    if not staff_is_genuine(tags, row):
        raise IntegrityFailure(f"staff member {row.username!r} fails its integrity check")
    return row


def now_utc(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)
