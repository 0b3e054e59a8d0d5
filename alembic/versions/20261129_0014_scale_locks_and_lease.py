"""scale: pending audit events, the worker lease, and one redundant index dropped

* ``audit_pending``: on PostgreSQL writers record their audit events here and one appender
  chains them into ``audit_events`` (no writer serialises on the chain's head any more).
* ``worker_lease``: the background worker's leader lease on SQLite (PostgreSQL uses an
  advisory lock).
* ``ix_withdrawals_wallet_created`` goes: ``(wallet_id, created_at)`` is a prefix of
  ``ix_withdrawals_velocity_wallet`` (0007), which serves every query it served.

Revision ID: 0014_scale_locks_and_lease
Revises: 0013_webhooks
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import walletsvc.db.models

revision: str = "0014_scale_locks_and_lease"
down_revision: str | Sequence[str] | None = "0013_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )
    op.create_table(
        "worker_lease",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_lease")),
    )
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_index("ix_withdrawals_wallet_created")


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.create_index("ix_withdrawals_wallet_created", ["wallet_id", "created_at"])
    op.drop_table("worker_lease")
    op.drop_table("audit_pending")
