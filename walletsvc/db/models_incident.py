"""Incident-response tables: emergency freezes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from walletsvc.db.models import Base, new_id, utcnow


class Freeze(Base):
    """One freeze: global (wallet_id NULL) or per wallet; active while lifted_at is NULL."""

    __tablename__ = "freezes"
    __table_args__ = (Index("ix_freezes_active", "lifted_at", "wallet_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    scope: Mapped[str] = mapped_column(String(16))  # all | withdrawals | deposits
    wallet_id: Mapped[str | None] = mapped_column(ForeignKey("wallets.id"), default=None)
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | risk
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(default=None)
    lifted_by: Mapped[str | None] = mapped_column(String(400), default=None)
