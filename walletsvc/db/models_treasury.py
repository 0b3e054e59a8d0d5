"""Treasury tables: cold destinations (and changes to them), sweeps, fee-bump tracking,
hot-balance alerts, and refills from cold (their PSBTs and the cold coins they spend).

A cold destination decides where sweeps send money, so its row carries an HMAC tag keyed from
the KEK (outside the database), like the other governed rows: a database edit cannot redirect
the next sweep to an attacker's address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, new_id, utcnow


class ColdDestinationRow(Base):
    """A wallet's watch-only cold storage; exactly one per wallet is ``active``."""

    __tablename__ = "cold_destinations"
    __table_args__ = (Index("ix_cold_destinations_wallet_status", "wallet_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    kind: Mapped[str] = mapped_column(String(20))  # wpkh | wsh-sortedmulti
    descriptor: Mapped[str] = mapped_column(Text)  # normalised, with checksum
    fingerprint: Mapped[str] = mapped_column(String(16))
    # The next cold address index a sweep may use; persisted so no address is paid twice.
    next_index: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
    mac: Mapped[str] = mapped_column(String(64))


class ColdDestinationChange(Base):
    """A request to replace a wallet's cold destination: applied only after its quorum."""

    __tablename__ = "cold_destination_changes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    descriptor: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    # pending_approval | applied | rejected | expired | cancelled
    status: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(120))
    approval_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class Sweep(Base):
    """One sweep to cold storage; its transaction is a ``chain_transactions`` row (kind sweep)."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("chain_transactions.id"), unique=True)
    cold_destination_id: Mapped[str] = mapped_column(ForeignKey("cold_destinations.id"))
    cold_index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(90))
    script_pubkey: Mapped[str] = mapped_column(String(140))
    amount_sat: Mapped[int] = mapped_column(BigInteger)
    kept_sat: Mapped[int] = mapped_column(BigInteger)  # left hot (change)
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    trigger: Mapped[str] = mapped_column(String(16))  # ceiling | forced
    requested_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TransactionWatch(Base):
    """When we signed a transaction (chain height), to notice one stuck unconfirmed."""

    __tablename__ = "transaction_watch"

    transaction_id: Mapped[str] = mapped_column(
        ForeignKey("chain_transactions.id"), primary_key=True
    )
    signed_height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HotAlert(Base):
    """A hot-balance alert (refill from cold); one open alert per wallet and kind."""

    __tablename__ = "hot_alerts"
    __table_args__ = (Index("ix_hot_alerts_wallet_status", "wallet_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    kind: Mapped[str] = mapped_column(String(16))  # refill
    balance_sat: Mapped[int] = mapped_column(BigInteger)
    floor_sat: Mapped[int] = mapped_column(BigInteger)
    target_sat: Mapped[int] = mapped_column(BigInteger)
    refill_sat: Mapped[int] = mapped_column(BigInteger)  # bring this much from cold
    status: Mapped[str] = mapped_column(String(16))  # open | cleared
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(default=None)


class Refill(Base):
    """A refill from cold storage: a BIP174 PSBT spending cold coins to a hot address, signed
    offline by the cold keys' holders and broadcast once complete."""

    __tablename__ = "refills"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    cold_destination_id: Mapped[str] = mapped_column(ForeignKey("cold_destinations.id"))
    # awaiting_signatures | broadcast | confirmed | cancelled
    status: Mapped[str] = mapped_column(String(24))
    amount_sat: Mapped[int] = mapped_column(BigInteger)  # to the hot address
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    change_sat: Mapped[int] = mapped_column(BigInteger)  # back to cold (0: no change output)
    change_index: Mapped[int | None] = mapped_column(Integer, default=None)
    hot_address: Mapped[str] = mapped_column(String(90))
    hot_script_pubkey: Mapped[str] = mapped_column(String(140))
    # The transaction without witnesses (hex): its txid is final, signatures do not change it.
    txid: Mapped[str] = mapped_column(String(64), unique=True)
    unsigned_tx: Mapped[str] = mapped_column(Text)
    psbt: Mapped[str] = mapped_column(Text)  # base64: the proposal plus signatures so far
    raw_tx: Mapped[str | None] = mapped_column(Text, default=None)  # final, once complete
    requested_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # HMAC (row key) over the proposal (db/tags.py, refill_message); NULL only on refills
    # proposed before revision 0016, which fail their check: cancel and propose again.
    mac: Mapped[str | None] = mapped_column(String(64), default=None)


class ColdUtxo(Base):
    """An output paying a cold address (watch-only): the cold balance, and what a refill can
    spend. ``reserved_by`` is the refill whose PSBT spends it."""

    __tablename__ = "cold_utxos"
    __table_args__ = (
        UniqueConstraint("txid", "vout"),
        Index("ix_cold_utxos_wallet_unspent", "wallet_id", "spent_by_txid"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    cold_destination_id: Mapped[str] = mapped_column(ForeignKey("cold_destinations.id"))
    cold_index: Mapped[int] = mapped_column(Integer)
    txid: Mapped[str] = mapped_column(String(64))
    vout: Mapped[int] = mapped_column(Integer)
    amount_sat: Mapped[int] = mapped_column(BigInteger)
    script_pubkey: Mapped[str] = mapped_column(String(140))
    is_coinbase: Mapped[bool] = mapped_column(Boolean, default=False)
    block_height: Mapped[int | None] = mapped_column(Integer, default=None)
    block_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    spent_by_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    spent_height: Mapped[int | None] = mapped_column(Integer, default=None)
    reserved_by: Mapped[str | None] = mapped_column(ForeignKey("refills.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
