"""theft shield: incidents caught in the mempool and the rounds of the race to cold storage

Revision ID: 0012_shield_incidents
Revises: 0011_console_passkeys
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import walletsvc.db.models

revision: str = "0012_shield_incidents"
down_revision: str | None = "0011_console_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shield_incidents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("wallet_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_theft_txid", sa.String(length=64), nullable=False),
        sa.Column("stolen", sa.JSON(), nullable=False),
        sa.Column("stolen_sat", sa.BigInteger(), nullable=False),
        sa.Column("max_fee_sat", sa.BigInteger(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("cap_reached", sa.Boolean(), nullable=False),
        sa.Column("freeze_id", sa.String(length=36), nullable=True),
        sa.Column("saved_sat", sa.BigInteger(), nullable=False),
        sa.Column("lost_sat", sa.BigInteger(), nullable=False),
        sa.Column("fees_spent_sat", sa.BigInteger(), nullable=False),
        sa.Column("resolved_txid", sa.String(length=64), nullable=True),
        sa.Column("resolved_height", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_shield_incidents_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shield_incidents")),
    )
    with op.batch_alter_table("shield_incidents", schema=None) as batch_op:
        batch_op.create_index("ix_shield_incidents_status", ["status", "wallet_id"], unique=False)

    op.create_table(
        "shield_rounds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("thief_txid", sa.String(length=64), nullable=False),
        sa.Column("thief_raw_tx", sa.Text(), nullable=False),
        sa.Column("thief_fee_sat", sa.BigInteger(), nullable=False),
        sa.Column("thief_vsize", sa.Integer(), nullable=False),
        sa.Column("evicted_fees_sat", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("answer_transaction_id", sa.String(length=36), nullable=True),
        sa.Column("answer_txid", sa.String(length=64), nullable=True),
        sa.Column("answer_fee_sat", sa.BigInteger(), nullable=True),
        sa.Column("answer_rate", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("answered_in_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["answer_transaction_id"],
            ["chain_transactions.id"],
            name=op.f("fk_shield_rounds_answer_transaction_id_chain_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["shield_incidents.id"],
            name=op.f("fk_shield_rounds_incident_id_shield_incidents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shield_rounds")),
        sa.UniqueConstraint("thief_txid", name=op.f("uq_shield_rounds_thief_txid")),
    )
    with op.batch_alter_table("shield_rounds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shield_rounds_incident_id"), ["incident_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("shield_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shield_rounds_incident_id"))

    op.drop_table("shield_rounds")
    with op.batch_alter_table("shield_incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_shield_incidents_status")

    op.drop_table("shield_incidents")
