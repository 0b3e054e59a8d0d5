"""Governance tables: treasury staff, their sessions, approval requests and decisions, the
allowlist and policy-change proposals.

Rows that grant power (a staff member's role and groups, an approval request's quorum, each
approval decision, an allowlist entry) carry an HMAC tag keyed from the KEK, which lives
outside the database: whoever can edit the database cannot forge a quorum or an entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, new_id, utcnow


class Staff(Base):
    """A human: treasury approver, operator or auditor."""

    __tablename__ = "staff"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # approver | operator | auditor
    groups: Mapped[list[Any]] = mapped_column()
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, PHC string
    # No TOTP secret: the signer holds it (migration 0016). The last RFC 6238 time step the
    # signer accepted for this member, kept for the record (the signer refuses replays itself).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    mac: Mapped[str] = mapped_column(String(64))


class StaffSession(Base):
    """A short-lived login. Only the SHA-256 of the random token is stored."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ApprovalRequest(Base):
    """One governed action waiting for m approvals of a group, bound to a content digest."""

    __tablename__ = "approval_requests"
    __table_args__ = (
        Index("ix_approval_requests_status_expires", "status", "expires_at"),
        Index("ix_approval_requests_kind_subject", "kind", "subject_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(36))
    required_group: Mapped[str] = mapped_column(String(64))
    m: Mapped[int] = mapped_column(Integer)
    # SHA-256 of the canonical JSON of ``content``: what the approvers approve.
    digest: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))  # pending|approved|rejected|expired|cancelled
    requester: Mapped[str] = mapped_column(String(120))
    requester_staff_id: Mapped[str | None] = mapped_column(ForeignKey("staff.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    mac: Mapped[str] = mapped_column(String(64))


class ApprovalDecision(Base):
    """One staff member's approve/reject of one digest of a request, with its step-up: the
    TOTP step, or the passkey whose assertion signed the decision (then no TOTP step)."""

    __tablename__ = "approval_decisions"
    __table_args__ = (UniqueConstraint("request_id", "staff_id", "digest"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"), index=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    digest: Mapped[str] = mapped_column(String(64))
    totp_step: Mapped[int | None] = mapped_column(BigInteger)
    passkey_id: Mapped[str | None] = mapped_column(String(36), default=None)
    comment: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    mac: Mapped[str] = mapped_column(String(64))


class AllowlistEntryRow(Base):
    """A destination on a wallet's allowlist (treasury destination or miner payout address)."""

    __tablename__ = "allowlist_entries"
    __table_args__ = (Index("ix_allowlist_entries_wallet_address", "wallet_id", "address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    address: Mapped[str] = mapped_column(String(90))
    label: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[str] = mapped_column(String(16))  # treasury (staff) | payout (API token)
    status: Mapped[str] = mapped_column(String(16))  # pending|active|rejected|expired|removed
    proposed_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When it gathered its approvals (or was accepted without): cooling-off runs from here.
    active_since: Mapped[datetime | None] = mapped_column(default=None)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    mac: Mapped[str] = mapped_column(String(64))


class PolicyProposal(Base):
    """A proposed policy document, its ratchet assessment, and where it is in its flow."""

    __tablename__ = "policy_proposals"
    __table_args__ = (Index("ix_policy_proposals_status_effective", "status", "effective_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str | None] = mapped_column(ForeignKey("wallets.id"), default=None)
    document: Mapped[dict[str, Any]] = mapped_column()
    sha256: Mapped[str] = mapped_column(String(64))
    base_sha256: Mapped[str] = mapped_column(String(64))
    # The active policy version the ratchet assessed against ("default/3", "wallet/2"). The
    # proposal applies only while that version is still active: a version, not a hash, so a
    # policy that went A -> B -> A meanwhile is noticed. NULL (rows from before): refused.
    base_version: Mapped[str | None] = mapped_column(String(64), default=None)
    direction: Mapped[str] = mapped_column(String(8))  # tighten | loosen
    assessment: Mapped[dict[str, Any]] = mapped_column()
    # pending_approval | time_locked | applied | vetoed | rejected | expired | superseded
    status: Mapped[str] = mapped_column(String(20))
    timelock_s: Mapped[int] = mapped_column(Integer, default=0)
    proposed_by: Mapped[str] = mapped_column(String(120))
    proposer_staff_id: Mapped[str | None] = mapped_column(ForeignKey("staff.id"), default=None)
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    effective_at: Mapped[datetime | None] = mapped_column(default=None)
    # The time lock also counts blocks (the host's clock alone can be moved): the scanned
    # chain height it ends at. It ends at whichever of effective_at and this comes later.
    effective_height: Mapped[int | None] = mapped_column(Integer, default=None)
    applied_at: Mapped[datetime | None] = mapped_column(default=None)
    vetoed_by: Mapped[str | None] = mapped_column(String(120), default=None)
