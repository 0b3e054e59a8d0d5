"""Incident-response tables of issue 5: governed unfreezes, key rotations and risk events.

(The freezes themselves live in models_incident.) Each governed row here is the subject of an
approval request (walletsvc.governance.approvals): the request's digest covers its content, so
an edited row stops counting earlier approvals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from walletsvc.db.models import Base, new_id, utcnow


class UnfreezeRequest(Base):
    """A request to lift one or more freezes; they lift only when its quorum is met."""

    __tablename__ = "unfreeze_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The freezes this request lifts, fixed when it is opened (sorted ids).
    freeze_ids: Mapped[list[Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    # pending_approval | applied | rejected | expired
    status: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(120))
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class KeyRotation(Base):
    """A governed key rotation of one wallet: a new epoch, retired addresses, a cold sweep."""

    __tablename__ = "key_rotations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    # pending_approval | rotated (new epoch live, sweeps under way) | rejected | expired
    status: Mapped[str] = mapped_column(String(20))
    from_epoch: Mapped[int] = mapped_column(Integer)
    to_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    new_xpub: Mapped[str | None] = mapped_column(String(128), default=None)
    requested_by: Mapped[str] = mapped_column(String(120))
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)


class RiskEvent(Base):
    """A risk rule that fired: what, on which evidence, and what it did (alert or freeze).

    ``fingerprint`` identifies the evidence (rule + the ids it saw), so one burst is reported
    once, not on every pass that still sees it.
    """

    __tablename__ = "risk_events"
    __table_args__ = (Index("ix_risk_events_rule_fingerprint", "rule_id", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    rule_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # alert | freeze
    wallet_id: Mapped[str | None] = mapped_column(ForeignKey("wallets.id"), default=None)
    fingerprint: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    freeze_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
