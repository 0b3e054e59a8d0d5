"""SQLAlchemy 2 typed models. The schema is created only by Alembic migrations.

Conventions: UUID string keys, timezone-aware UTC timestamps, money as BigInteger satoshis,
relationships avoided in favour of explicit repository queries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite hands back naive ones, which we re-tag as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    network: Mapped[str] = mapped_column(String(16))
    current_epoch: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KeyEpoch(Base):
    """One seed generation of a wallet: its public keys. The seed lives in the signer.

    ``encrypted_seed`` was set on rows made before the signer held the seeds (revision 0014);
    migration 0020 moved those seeds into the signer and cleared it: always NULL now."""

    __tablename__ = "key_epochs"
    __table_args__ = (UniqueConstraint("wallet_id", "epoch"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    epoch: Mapped[int] = mapped_column(Integer)
    encrypted_seed: Mapped[str | None] = mapped_column(Text, default=None)
    account_xpub: Mapped[str] = mapped_column(String(128))
    master_fingerprint: Mapped[str] = mapped_column(String(8))
    next_receive_index: Mapped[int] = mapped_column(Integer, default=0)
    next_change_index: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class Address(Base):
    """A derived address we watch: issued ones, and the look-ahead window beyond them."""

    __tablename__ = "addresses"
    __table_args__ = (UniqueConstraint("wallet_id", "epoch", "chain", "index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    epoch: Mapped[int] = mapped_column(Integer)
    chain: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(90), unique=True)
    script_pubkey: Mapped[str] = mapped_column(String(140), unique=True)
    label: Mapped[str | None] = mapped_column(String(200), default=None)
    issued_at: Mapped[datetime | None] = mapped_column(default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class Utxo(Base):
    """An output paying one of our addresses, as seen on chain (or in our own mempool tx)."""

    __tablename__ = "utxos"
    __table_args__ = (
        UniqueConstraint("txid", "vout"),
        Index("ix_utxos_wallet_unspent", "wallet_id", "spent_by_txid"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    address_id: Mapped[str] = mapped_column(ForeignKey("addresses.id"))
    txid: Mapped[str] = mapped_column(String(64))
    vout: Mapped[int] = mapped_column(Integer)
    amount_sat: Mapped[int] = mapped_column(BigInteger)
    script_pubkey: Mapped[str] = mapped_column(String(140))
    is_coinbase: Mapped[bool] = mapped_column(Boolean, default=False)
    block_height: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    block_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    spent_by_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    spent_height: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    # The signed transaction that spends (or will spend) this coin; a reserved coin is not
    # offered to coin selection again.
    reserved_by: Mapped[str | None] = mapped_column(
        ForeignKey("chain_transactions.id"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScannedBlock(Base):
    """The blocks the scanner has processed: how it notices a reorganisation."""

    __tablename__ = "scanned_blocks"

    height: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    scanned_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChainTransaction(Base):
    """A transaction we signed (payout batch or sweep). Stored before it is broadcast."""

    __tablename__ = "chain_transactions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # payout | sweep
    status: Mapped[str] = mapped_column(String(16), index=True)
    txid: Mapped[str] = mapped_column(String(64), unique=True)
    raw_tx: Mapped[str] = mapped_column(Text)
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    vsize: Mapped[int] = mapped_column(Integer)
    fee_rate_sat_per_vb: Mapped[int] = mapped_column(Integer)
    replaces_id: Mapped[str | None] = mapped_column(String(36), default=None)
    block_height: Mapped[int | None] = mapped_column(Integer, default=None)
    block_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    broadcast_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    broadcast_at: Mapped[datetime | None] = mapped_column(default=None)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)


class PayoutRound(Base):
    """One request for many payouts (a pool's payout round), decided as a whole.

    Each payout is an ordinary ``withdrawals`` row pointing here (``round_id``, ``round_index``);
    the round keeps what was asked once: the idempotency key and the body's hash.
    """

    __tablename__ = "payout_rounds"
    __table_args__ = (
        UniqueConstraint("token_id", "idempotency_key"),
        Index("ix_payout_rounds_wallet_created", "wallet_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    token_id: Mapped[str] = mapped_column(String(36))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(200), default=None)
    payout_count: Mapped[int] = mapped_column(Integer)
    total_sat: Mapped[int] = mapped_column(BigInteger)
    policy_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Withdrawal(Base):
    __tablename__ = "withdrawals"
    __table_args__ = (
        Index("ix_withdrawals_status_created", "status", "created_at"),
        # The payout engine looks its payouts up by its own reference (`?reference=`).
        Index("ix_withdrawals_reference", "reference"),
        # The velocity rules' SUMs (walletsvc.payouts.intake): one range scan per scope, and
        # covering (status, amount) so the rows themselves are not read.
        Index("ix_withdrawals_velocity_wallet", "wallet_id", "created_at", "status", "amount_sat"),
        Index(
            "ix_withdrawals_velocity_destination",
            "wallet_id",
            "destination",
            "created_at",
            "status",
            "amount_sat",
        ),
        Index(
            "ix_withdrawals_velocity_token",
            "wallet_id",
            "token_id",
            "created_at",
            "status",
            "amount_sat",
        ),
        # A round's payouts in the order they were asked for (walletsvc.payouts.rounds).
        Index("ix_withdrawals_round", "round_id", "round_index"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    token_id: Mapped[str | None] = mapped_column(String(36), default=None)
    destination: Mapped[str] = mapped_column(String(90))
    script_pubkey: Mapped[str] = mapped_column(String(140))
    amount_sat: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(24))
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy_hash: Mapped[str] = mapped_column(String(64))
    # HMAC (key derived from the KEK, outside the DB) over the approved content: the signer
    # refuses a payout whose row was edited after the policy engine approved it.
    authorization_mac: Mapped[str | None] = mapped_column(String(64), default=None)
    transaction_id: Mapped[str | None] = mapped_column(
        ForeignKey("chain_transactions.id"), default=None, index=True
    )
    fee_share_sat: Mapped[int | None] = mapped_column(BigInteger, default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Indexed for polling (`GET /v1/withdrawals?updated_since=`); bumped on every UPDATE.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
    # Set when the payout came in a payout round: the round and its position in the request.
    round_id: Mapped[str | None] = mapped_column(ForeignKey("payout_rounds.id"), default=None)
    round_index: Mapped[int | None] = mapped_column(Integer, default=None)


# The width of a velocity counter's time bucket (``VelocityBucket.bucket``). The triggers of
# migration 0018 compute buckets with the same width; changing it needs a migration that
# rebuilds the table.
VELOCITY_BUCKET_SECONDS = 300


class VelocityBucket(Base):
    """Satoshis and count of a wallet's holding payouts created in one 5-minute bucket, per
    scope: ``wallet`` (key ''), ``destination`` (key: the address) and ``token`` (key: the
    API token id, '' for none). A cache of ``withdrawals`` kept by database triggers
    (migration 0018) in the very statement that inserts, moves or deletes a payout, so a
    velocity window costs its buckets plus the rows of its oldest, partial bucket
    (``WithdrawalRepository.held_totals_since``), not one index entry per payout."""

    __tablename__ = "velocity_buckets"

    wallet_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(12), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(90), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    amount_sat: Mapped[int] = mapped_column(BigInteger)
    payouts: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("token_id", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough (no brute force).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    # SHA-256 of the client certificate this token must come with (mutual TLS), if bound.
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    # HMAC tag over id, name, hash, scopes and revocation (walletsvc.db.tags.api_token_message):
    # a token row inserted or widened in the database fails it and is refused. NULL only for
    # rows from before the column (refused too: re-issue them).
    mac: Mapped[str | None] = mapped_column(String(64), default=None)


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("wallet_id", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # NULL: the default policy for every wallet without its own.
    wallet_id: Mapped[str | None] = mapped_column(ForeignKey("wallets.id"), default=None)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | superseded | proposed
    mac: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    """Append-only, hash-chained (HMAC keyed outside the DB) record of every state change."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(64), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class PendingAuditEvent(Base):
    """An audit event committed with its transaction but not yet chained (PostgreSQL).

    Writers on PostgreSQL do not serialise on the chain's head: each records its events here,
    and the single appender (``Database.append_pending_audit``) moves them into
    ``audit_events`` in order, giving each its sequence number and hash.
    """

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(64), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditHead(Base):
    """One row: the chain's head. Only the audit appender locks it (walletsvc.db.database)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    # HMAC (audit key) over (last_seq, last_hash), rewritten with every event; NULL only
    # before the first event after revision 0007.
    mac: Mapped[str | None] = mapped_column(String(64), default=None)


class WorkerLease(Base):
    """The background worker's leader lease where no advisory lock exists (SQLite).

    One row per lease name; the holder renews ``expires_at`` every pass, and another process
    takes the lease over once it has expired (walletsvc.db.leader).
    """

    __tablename__ = "worker_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    expires_at: Mapped[datetime]
