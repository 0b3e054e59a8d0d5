"""Incident-response tables: emergency freezes, theft-shield incidents and their rounds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
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


class ShieldIncident(Base):
    """A theft caught in the mempool and the race to cold storage it started (one per set of
    stolen coins; each thief transaction and our answer to it is a ``ShieldRound``)."""

    __tablename__ = "shield_incidents"
    __table_args__ = (Index("ix_shield_incidents_status", "status", "wallet_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    status: Mapped[str] = mapped_column(String(16))  # racing | saved | lost
    first_theft_txid: Mapped[str] = mapped_column(String(64))
    stolen: Mapped[list[str]] = mapped_column(JSON)  # "txid:vout" of our coins the thief spends
    stolen_sat: Mapped[int] = mapped_column(BigInteger)
    max_fee_sat: Mapped[int] = mapped_column(BigInteger)  # the policy's cap for this incident
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    cap_reached: Mapped[bool] = mapped_column(Boolean, default=False)
    freeze_id: Mapped[str | None] = mapped_column(String(36), default=None)
    saved_sat: Mapped[int] = mapped_column(BigInteger, default=0)  # arrived at cold storage
    lost_sat: Mapped[int] = mapped_column(BigInteger, default=0)  # went to the thief's tx
    fees_spent_sat: Mapped[int] = mapped_column(BigInteger, default=0)  # by our mined answer
    resolved_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    resolved_height: Mapped[int | None] = mapped_column(Integer, default=None)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)


class ShieldRound(Base):
    """One thief transaction seen in the mempool and what we answered."""

    __tablename__ = "shield_rounds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("shield_incidents.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    thief_txid: Mapped[str] = mapped_column(String(64), unique=True)
    thief_raw_tx: Mapped[str] = mapped_column(Text)  # the evidence
    thief_fee_sat: Mapped[int] = mapped_column(BigInteger)
    thief_vsize: Mapped[int] = mapped_column(Integer)
    evicted_fees_sat: Mapped[int] = mapped_column(BigInteger)  # with its mempool descendants
    outcome: Mapped[str] = mapped_column(String(16))  # answered | cap_reached | failed
    answer_transaction_id: Mapped[str | None] = mapped_column(
        ForeignKey("chain_transactions.id"), default=None
    )
    answer_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    answer_fee_sat: Mapped[int | None] = mapped_column(BigInteger, default=None)
    answer_rate: Mapped[int | None] = mapped_column(Integer, default=None)
    detail: Mapped[str] = mapped_column(Text, default="")
    # From the node's notification to our answer signed and stored (before broadcast).
    answered_in_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
