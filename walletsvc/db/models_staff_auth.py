"""Staff authenticators beyond the password: passkeys (WebAuthn) and governed TOTP resets.

A passkey can approve on its owner's behalf, so its row grants power and carries an HMAC tag
keyed from the KEK (walletsvc.db.tags): a credential inserted into the database by hand never
verifies. A TOTP reset and a staff change (enrolment after the signer's genesis) wait for
their approval request's quorum; the signer then makes the secret (migration 0016).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, new_id, utcnow


class StaffPasskey(Base):
    """One WebAuthn credential of one staff member."""

    __tablename__ = "staff_passkeys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    # base64url (no padding) of the authenticator's credential id and COSE public key.
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    # The authenticator's signature counter as last seen (0 for authenticators without one).
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    mac: Mapped[str] = mapped_column(String(64))


class StaffTotpReset(Base):
    """A lost authenticator replaced: governed (kind ``staff_totp_reset``)."""

    __tablename__ = "staff_totp_resets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    reason: Mapped[str] = mapped_column(String(1000))
    # pending_approval | approved (to apply: the signer makes the secret) | applied | rejected
    # | expired
    status: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(120))
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class StaffChange(Base):
    """A member enrolled (or changed) after the signer's genesis: governed (kind
    ``staff_change``, the ``policy_change`` quorum). Applied once approved: the staff row is
    made then, and the signer enrols the member on the decisions it recorded itself."""

    __tablename__ = "staff_changes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    staff_id: Mapped[str] = mapped_column(String(36), index=True)  # the member's id to be
    action: Mapped[str] = mapped_column(String(10))  # enrol | update
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    groups: Mapped[list[Any]] = mapped_column(JSON)
    # argon2id of the first password (an enrolment; "" for an update). Tagged (``mac``,
    # walletsvc.db.tags.staff_change_message): a database writer cannot set a pending new
    # member's password.
    password_hash: Mapped[str] = mapped_column(String(200))
    # pending_approval | approved (to apply) | applied | rejected | expired
    status: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(120))
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    mac: Mapped[str] = mapped_column(String(64))
