"""Staff passkeys: register one (with a TOTP step-up), list them, remove one, and use one to
decide.

The WebAuthn checks themselves are walletsvc.keys.passkeys (no framework, no database), so the
separate signer can run the very same verification of an approval. Here: the rows, their
integrity tags, the step-up rules and the audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models_governance import Staff
from walletsvc.db.models_staff_auth import StaffPasskey
from walletsvc.db.tags import staff_passkey_message
from walletsvc.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from walletsvc.governance.staff import (
    StaffPrincipal,
    check_totp,
    ensure_not_locked,
    load_active_staff,
    now_utc,
    record_failure,
)
from walletsvc.keys import passkeys as webauthn
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.passkeys import RelyingParty, StoredPasskey, approval_challenge
from walletsvc.keys.sealing import TotpSealer

__all__ = ["RelyingParty", "approval_challenge"]
MAX_LABEL_LENGTH = 100


@dataclass(frozen=True)
class PasskeyInfo:
    id: str
    label: str
    created_at: datetime
    last_used_at: datetime | None


def _usable(tags: RowTagger, row: StaffPasskey) -> bool:
    return row.disabled_at is None and tags.verify(staff_passkey_message(row), row.mac)


def my_passkeys(db: Database, tags: RowTagger, staff: StaffPrincipal) -> list[PasskeyInfo]:
    with db.read() as uow:
        return [
            PasskeyInfo(p.id, p.label, p.created_at, p.last_used_at)
            for p in uow.staff_passkeys.of_staff(staff.staff_id)
            if _usable(tags, p)
        ]


def _credential_ids(db: Database, tags: RowTagger, staff: StaffPrincipal) -> list[str]:
    with db.read() as uow:
        return [
            p.credential_id for p in uow.staff_passkeys.of_staff(staff.staff_id) if _usable(tags, p)
        ]


def registration_options(
    db: Database, tags: RowTagger, rp: RelyingParty, staff: StaffPrincipal, *, challenge: bytes
) -> str:
    """navigator.credentials.create() options; ``challenge`` is fixed by the caller (the
    console derives it from the session secret, so it needs no server-side state)."""
    return webauthn.registration_options(
        rp,
        user_id=staff.staff_id,
        username=staff.username,
        challenge=challenge,
        existing=_credential_ids(db, tags, staff),
    )


def register_passkey(
    db: Database,
    tags: RowTagger,
    totp_secrets: TotpSealer,
    settings: Settings,
    rp: RelyingParty,
    staff: StaffPrincipal,
    *,
    challenge: bytes,
    credential: str,
    totp: str,
    label: str,
    now: datetime | None = None,
) -> str:
    """Store a new passkey of ``staff`` after a fresh TOTP code: a passkey can approve, so
    adding one is a step-up like an approval (a stolen session alone cannot add one)."""
    label = label.strip() or "passkey"
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"the label is longer than {MAX_LABEL_LENGTH}", field="label")
    stored = webauthn.verify_registration(rp, credential, challenge=challenge)
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        row = load_active_staff(uow, tags, staff.staff_id)
        _step, error = check_totp(uow, totp_secrets, settings, row, totp, moment)
        if error is None:
            if uow.staff_passkeys.by_credential_id(stored.credential_id) is not None:
                raise Conflict("this passkey is registered already", field="passkey")
            passkey = StaffPasskey(
                staff_id=row.id,
                credential_id=stored.credential_id,
                public_key=stored.public_key,
                sign_count=stored.sign_count,
                label=label,
                created_at=moment,
                mac="",
            )
            uow.staff_passkeys.add(passkey, flush=True)
            passkey.mac = tags.tag(staff_passkey_message(passkey))
            uow.audit(
                staff.actor,
                "staff.passkey_registered",
                "staff",
                row.id,
                {"passkey_id": passkey.id, "label": label},
            )
            passkey_id = passkey.id
    if error is not None:
        raise error  # after the commit: the failed attempt is recorded
    return passkey_id


def remove_passkey(
    db: Database,
    tags: RowTagger,
    staff: StaffPrincipal,
    *,
    passkey_id: str,
    now: datetime | None = None,
) -> PasskeyInfo:
    """Remove one of ``staff``'s own passkeys (a key lost, replaced or given away): from now on
    it approves nothing. The row stays, disabled and re-tagged, so past decisions made with it
    still name it and the audit trail still resolves.

    No TOTP step-up, unlike registering: removing takes a way to approve away, never adds one,
    and the member's TOTP keeps working. Another member's passkey, or one already removed, is
    "no such passkey" (404): whose keys exist is not told to others.
    """
    moment = now_utc(now)
    with db.write() as uow:
        row = load_active_staff(uow, tags, staff.staff_id)
        passkey = uow.staff_passkeys.get(passkey_id, for_update=True)
        if passkey is None or passkey.staff_id != row.id or not _usable(tags, passkey):
            raise NotFound("no such passkey of yours", field="passkey_id")
        passkey.disabled_at = moment
        passkey.mac = tags.tag(staff_passkey_message(passkey))
        uow.audit(
            staff.actor,
            "staff.passkey_removed",
            "staff",
            row.id,
            {"passkey_id": passkey.id, "label": passkey.label},
        )
        # When the signer verifies passkey approvals itself, it keeps its own list of keys:
        # the signer op `remove_passkey` goes here, inside this transaction, so that a failed
        # call to the signer leaves the key in place on both sides rather than on one.
        return PasskeyInfo(passkey.id, passkey.label, passkey.created_at, passkey.last_used_at)


def approval_options(
    db: Database,
    tags: RowTagger,
    rp: RelyingParty,
    staff: StaffPrincipal,
    *,
    digest: str,
    decision: str,
) -> str:
    """navigator.credentials.get() options to decide ``decision`` on content ``digest``."""
    allowed = _credential_ids(db, tags, staff)
    if not allowed:
        raise Conflict("you have no passkey; register one first", field="passkey")
    challenge = approval_challenge(digest, decision)
    return webauthn.approval_options(rp, challenge=challenge, allowed=allowed)


def check_passkey(
    uow: UnitOfWork,
    tags: RowTagger,
    settings: Settings,
    rp: RelyingParty,
    row: Staff,
    *,
    assertion: str,
    digest: str,
    decision: str,
    now: datetime,
) -> tuple[str | None, DomainError | None]:
    """The passkey step-up of a decision, inside the caller's write transaction, as
    walletsvc.governance.staff.check_totp: (passkey id, None) or (None, error), a failure
    recorded toward the account's lock (so the caller lets it commit, then raises)."""
    ensure_not_locked(uow, row, now)
    passkey = uow.staff_passkeys.by_credential_id(webauthn.credential_id_of(assertion))
    if passkey is None or passkey.staff_id != row.id or not _usable(tags, passkey):
        unknown = "this passkey may not approve for you (not registered, or removed)"
        return None, _passkey_failure(uow, settings, row, now, "passkey_unknown", unknown)
    stored = StoredPasskey(passkey.credential_id, passkey.public_key, passkey.sign_count)
    try:
        count = webauthn.verify_approval(
            rp, stored, assertion, expected_challenge=approval_challenge(digest, decision)
        )
    except DomainError:
        wrong = "the passkey signature does not verify for this decision"
        return None, _passkey_failure(uow, settings, row, now, "passkey_wrong", wrong)
    passkey.sign_count, passkey.last_used_at = count, now
    row.failed_attempts = 0
    return passkey.id, None


def _passkey_failure(
    uow: UnitOfWork, settings: Settings, row: Staff, now: datetime, reason: str, message: str
) -> DomainError:
    error = record_failure(uow, settings, row, now, reason)
    if error.code == "account_locked":
        return error
    return type(error)(message, field="passkey")
