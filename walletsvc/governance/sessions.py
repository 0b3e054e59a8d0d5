"""Staff login sessions: username + password + TOTP -> a short-lived random bearer token.

The token is 256 bits from the OS RNG and stored only as SHA-256 (no brute force against a
256-bit secret, so a fast hash suffices). It carries its own prefix so that the API knows at a
glance whether a bearer credential is a staff session or a machine token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models_governance import Staff, StaffSession
from walletsvc.domain.errors import DomainError, InvalidCredentials, Unauthenticated
from walletsvc.domain.ports import SignerPort
from walletsvc.governance.login_throttle import LoginThrottle
from walletsvc.governance.staff import (
    StaffPrincipal,
    check_totp,
    ensure_not_locked,
    now_utc,
    principal_for,
    record_failure,
    staff_is_genuine,
    verify_password,
)
from walletsvc.keys.integrity import RowTagger

SESSION_PREFIX = "wsst_"
_BAD_LOGIN = "invalid username, password or TOTP code"


@dataclass(frozen=True)
class CreatedSession:
    token: str  # one-time output: returned to the client, stored only as a hash
    expires_at: datetime
    principal: StaffPrincipal


def hash_session_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_session_token(secret: str) -> bool:
    return secret.startswith(SESSION_PREFIX)


def login(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    settings: Settings,
    *,
    username: str,
    password: str,
    totp: str,
    now: datetime | None = None,
    client: str = "unknown",
    throttle: LoginThrottle | None = None,
) -> CreatedSession:
    """A session for the right password and a fresh TOTP code.

    A wrong password (or an unknown username: the same answer after the same argon2 work) is
    only counted by ``throttle``, per ``client`` address and per username, never toward the
    account lock, so nobody can lock a staff member out by guessing. The lock counts wrong
    codes after a right password.
    """
    moment = now_utc(now)
    if throttle is not None:
        throttle.ensure_address_allowed(client, moment)
    found_id, password_ok = _look_up_and_check_password(db, username, password)
    if found_id is None or not password_ok:
        throttled = throttle.record_failure(client, username, moment) if throttle else None
        raise throttled or InvalidCredentials(_BAD_LOGIN)
    with db.write() as uow:
        row = _login_candidate(uow, tags, found_id)
        ensure_not_locked(uow, row, moment)
        _step, totp_error = check_totp(uow, signer, settings, row, totp, moment)
        error = _as_login_error(totp_error) if totp_error else None
        if error is None:
            created = _open_session(uow, tags, settings, row, moment)
            uow.audit(
                created.principal.actor,
                "session.created",
                "staff",
                row.id,
                {"session_id": created.principal.session_id, "expires_at": created.expires_at},
            )
    if error is not None:
        raise error  # after the commit: the failed attempt (and any lock) is recorded
    return created


def check_password(
    db: Database,
    tags: RowTagger,
    settings: Settings,
    *,
    username: str,
    password: str,
    now: datetime | None = None,
) -> StaffPrincipal:
    """The login's first factor alone, for the CLI (whose commands ask the TOTP code later).

    A wrong password counts toward the account's lockout exactly as a failed login does.
    """
    moment = now_utc(now)
    found_id, password_ok = _find_and_check_password(db, username, password)
    with db.write() as uow:
        row, error = _first_factor(uow, tags, settings, found_id, password_ok, moment)
        principal = principal_for(tags, row, None) if error is None else None
    if error is not None or principal is None:
        raise error or InvalidCredentials(_BAD_LOGIN)  # after the commit, as in login
    return principal


def _find_and_check_password(db: Database, username: str, password: str) -> tuple[str, bool]:
    found_id, password_ok = _look_up_and_check_password(db, username, password)
    if found_id is None:
        raise InvalidCredentials(_BAD_LOGIN)
    return found_id, password_ok


def _look_up_and_check_password(
    db: Database, username: str, password: str
) -> tuple[str | None, bool]:
    # argon2 is slow on purpose; verify before taking the global write lock. An unknown user
    # costs one verification against a dummy hash, so the time does not tell either.
    with db.read() as uow:
        found = uow.staff.by_username(username)
        password_ok = verify_password(found, password)
    return (found.id if found else None), password_ok


def _login_candidate(uow: UnitOfWork, tags: RowTagger, staff_id: str) -> Staff:
    row = uow.staff.get(staff_id)
    if row is None or row.disabled_at is not None or not staff_is_genuine(tags, row):
        raise InvalidCredentials(_BAD_LOGIN)
    return row


def _first_factor(
    uow: UnitOfWork,
    tags: RowTagger,
    settings: Settings,
    staff_id: str,
    password_ok: bool,
    now: datetime,
) -> tuple[Staff, DomainError | None]:
    """The staff row if it may log in; a wrong password is recorded and returned as the error.

    The CLI's first factor: whoever runs the CLI already reaches the database and the KEK,
    so here a wrong password still counts toward the lock."""
    row = _login_candidate(uow, tags, staff_id)
    ensure_not_locked(uow, row, now)
    if not password_ok:
        return row, _as_login_error(record_failure(uow, settings, row, now, "password_wrong"))
    return row, None


def _as_login_error(error: DomainError) -> DomainError:
    # A lock is worth telling; anything else is one vague message (no username oracle).
    return error if error.code == "account_locked" else InvalidCredentials(_BAD_LOGIN)


def _open_session(
    uow: UnitOfWork, tags: RowTagger, settings: Settings, row: Staff, now: datetime
) -> CreatedSession:
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    record = StaffSession(
        staff_id=row.id,
        token_hash=hash_session_token(token),
        created_at=now,
        expires_at=now + timedelta(seconds=settings.session_ttl_s),
    )
    uow.staff_sessions.add(record, flush=True)
    return CreatedSession(token, record.expires_at, principal_for(tags, row, record.id))


def authenticate_session(
    db: Database, tags: RowTagger, token: str, *, now: datetime | None = None
) -> StaffPrincipal:
    moment = now_utc(now)
    with db.read() as uow:
        record = uow.staff_sessions.by_token_hash(hash_session_token(token))
        if record is None or record.revoked_at is not None or record.expires_at <= moment:
            raise Unauthenticated("invalid, expired or ended staff session")
        row = uow.staff.get(record.staff_id)
        if row is None or row.disabled_at is not None:
            raise Unauthenticated("invalid, expired or ended staff session")
        return principal_for(tags, row, record.id)


def end_session(db: Database, principal: StaffPrincipal, *, now: datetime | None = None) -> None:
    with db.write() as uow:
        record = uow.staff_sessions.get(principal.session_id)
        if record is not None and record.revoked_at is None:
            record.revoked_at = now_utc(now)
            uow.audit(
                principal.actor,
                "session.ended",
                "staff",
                principal.staff_id,
                {"session_id": record.id},
            )
