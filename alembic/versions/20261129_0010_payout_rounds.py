"""payout rounds: one request for many payouts, each payout a withdrawal linked to its round

Revision ID: 0010_payout_rounds
Revises: 0009_refills
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import walletsvc.db.models

revision: str = "0010_payout_rounds"
down_revision: str | Sequence[str] | None = "0009_refills"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payout_rounds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("wallet_id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("payout_count", sa.Integer(), nullable=False),
        sa.Column("total_sat", sa.BigInteger(), nullable=False),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_payout_rounds_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_rounds")),
        sa.UniqueConstraint(
            "token_id", "idempotency_key", name=op.f("uq_payout_rounds_token_id_idempotency_key")
        ),
    )
    op.create_index("ix_payout_rounds_wallet_created", "payout_rounds", ["wallet_id", "created_at"])
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("round_index", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_withdrawals_round_id_payout_rounds"),
            "payout_rounds",
            ["round_id"],
            ["id"],
        )
        batch_op.create_index("ix_withdrawals_round", ["round_id", "round_index"])


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_index("ix_withdrawals_round")
        batch_op.drop_constraint(
            batch_op.f("fk_withdrawals_round_id_payout_rounds"), type_="foreignkey"
        )
        batch_op.drop_column("round_index")
        batch_op.drop_column("round_id")
    op.drop_index("ix_payout_rounds_wallet_created", table_name="payout_rounds")
    op.drop_table("payout_rounds")
