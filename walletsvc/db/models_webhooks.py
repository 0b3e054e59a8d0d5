"""Webhook tables: the subscriptions, the event outbox and the delivery log.

Events are written to the outbox inside the write transaction that caused them (so an event
exists exactly when its change committed) and delivered later by the dispatcher
(walletsvc.webhooks.dispatcher), which never holds the write lock while it talks HTTP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from walletsvc.db.models import Base, new_id, utcnow


class Webhook(Base):
    """A URL that receives signed events, owned by one API token."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Event types this webhook receives; an empty list means every type.
    event_types: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The signing secret, sealed under the KEK (walletsvc.keys.sealing.WebhookSecretSealer):
    # the dispatcher must be able to sign, so it is kept, but never in clear.
    secret_sealed: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)


class OutboxEvent(Base):
    """One event, committed with the change it describes; fanned out to webhooks later."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "fanned_out", "seq"),)

    # A sequence gives the dispatcher the commit order to fan out in.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)


class WebhookDelivery(Base):
    """One event to one webhook: its attempts so far and what the receiver answered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    event_id: Mapped[str] = mapped_column(ForeignKey("outbox_events.id"))
    # pending (an attempt is due at next_attempt_at) | delivered | failed (attempts used up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(400), default=None)
    # Set on a delivery made by an operator's replay: the delivery it repeats.
    replay_of: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
