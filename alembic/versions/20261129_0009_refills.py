"""refills from cold storage (PSBTs signed offline) and the cold coins the scanner watches

Revision ID: 0009_refills
Revises: 0008_token_and_audit_head_tags
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import walletsvc.db.models

revision: str = "0009_refills"
down_revision: str | Sequence[str] | None = "0008_token_and_audit_head_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("wallet_id", sa.String(length=36), nullable=False),
        sa.Column("cold_destination_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("fee_sat", sa.BigInteger(), nullable=False),
        sa.Column("change_sat", sa.BigInteger(), nullable=False),
        sa.Column("change_index", sa.Integer(), nullable=True),
        sa.Column("hot_address", sa.String(length=90), nullable=False),
        sa.Column("hot_script_pubkey", sa.String(length=140), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("unsigned_tx", sa.Text(), nullable=False),
        sa.Column("psbt", sa.Text(), nullable=False),
        sa.Column("raw_tx", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cold_destination_id"],
            ["cold_destinations.id"],
            name=op.f("fk_refills_cold_destination_id_cold_destinations"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_refills_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refills")),
        sa.UniqueConstraint("txid", name=op.f("uq_refills_txid")),
    )
    with op.batch_alter_table("refills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refills_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "cold_utxos",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("wallet_id", sa.String(length=36), nullable=False),
        sa.Column("cold_destination_id", sa.String(length=36), nullable=False),
        sa.Column("cold_index", sa.Integer(), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("script_pubkey", sa.String(length=140), nullable=False),
        sa.Column("is_coinbase", sa.Boolean(), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=True),
        sa.Column("block_hash", sa.String(length=64), nullable=True),
        sa.Column("spent_by_txid", sa.String(length=64), nullable=True),
        sa.Column("spent_height", sa.Integer(), nullable=True),
        sa.Column("reserved_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cold_destination_id"],
            ["cold_destinations.id"],
            name=op.f("fk_cold_utxos_cold_destination_id_cold_destinations"),
        ),
        sa.ForeignKeyConstraint(
            ["reserved_by"], ["refills.id"], name=op.f("fk_cold_utxos_reserved_by_refills")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_cold_utxos_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cold_utxos")),
        sa.UniqueConstraint("txid", "vout", name=op.f("uq_cold_utxos_txid_vout")),
    )
    with op.batch_alter_table("cold_utxos", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cold_utxos_wallet_unspent", ["wallet_id", "spent_by_txid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cold_utxos", schema=None) as batch_op:
        batch_op.drop_index("ix_cold_utxos_wallet_unspent")

    op.drop_table("cold_utxos")
    with op.batch_alter_table("refills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refills_wallet_id"))

    op.drop_table("refills")
