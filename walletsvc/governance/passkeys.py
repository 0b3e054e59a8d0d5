"""Staff passkeys: register one (with a TOTP step-up), list them, and use one to decide.

The WebAuthn checks themselves are walletsvc.keys.passkeys (no framework, no database), so the
separate signer can run the very same verification of an approval. Here: the rows, their
integrity tags, the step-up rules and the audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from walletsvc.config import Settings
from walletsvc.db.database import Database
from walletsvc.db.models_staff_auth import StaffPasskey
from walletsvc.db.tags import staff_passkey_message
from walletsvc.domain.errors import AccountLocked, Conflict, DomainError, InvalidInput, StepUpFailed
from walletsvc.domain.ports import SignerPort
from walletsvc.governance.staff import (
    StaffPrincipal,
    accepted,
    ensure_not_locked,
    load_active_staff,
    now_utc,
    step_up_failed,
)
from walletsvc.keys import passkeys as webauthn
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.passkeys import RelyingParty, approval_challenge

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
    signer: SignerPort,
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
    """Register a new passkey of ``staff`` with a fresh TOTP code: a passkey can approve, so
    adding one is a step-up like an approval (a stolen session alone cannot add one). The
    signer checks the code and the registration itself and keeps the public key it will
    verify approvals with; the row here lists it."""
    label = label.strip() or "passkey"
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"the label is longer than {MAX_LABEL_LENGTH}", field="label")
    stored = webauthn.verify_registration(rp, credential, challenge=challenge)
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        row = load_active_staff(uow, tags, staff.staff_id)
        ensure_not_locked(uow, row, moment)
        if uow.staff_passkeys.by_credential_id(stored.credential_id) is not None:
            raise Conflict("this passkey is registered already", field="passkey")
        try:
            signer.register_passkey(
                staff_id=row.id, credential=credential, challenge=challenge, totp=totp
            )
        except StepUpFailed as exc:
            error = step_up_failed(uow, settings, row, moment, exc)
        except AccountLocked as exc:
            error = exc
        if error is None:
            accepted(row, None)
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
