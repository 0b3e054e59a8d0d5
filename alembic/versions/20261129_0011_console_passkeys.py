"""staff passkeys (WebAuthn), governed TOTP resets, and decisions signed with a passkey

Revision ID: 0011_console_passkeys
Revises: 0010_payout_rounds
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import walletsvc.db.models

revision: str = "0011_console_passkeys"
down_revision: str | Sequence[str] | None = "0010_payout_rounds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_passkeys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("staff_id", sa.String(length=36), nullable=False),
        sa.Column("credential_id", sa.String(length=1400), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
    )
    op.create_index("ix_staff_passkeys_staff_id", "staff_passkeys", ["staff_id"])
    op.create_table(
        "staff_totp_resets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("staff_id", sa.String(length=36), nullable=False),
        sa.Column("totp_secret_enc", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("approval_request_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_totp_resets_staff_id", "staff_totp_resets", ["staff_id"])
    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.alter_column("totp_step", existing_type=sa.BigInteger(), nullable=True)
        batch_op.add_column(sa.Column("passkey_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.drop_column("passkey_id")
        batch_op.alter_column("totp_step", existing_type=sa.BigInteger(), nullable=False)
    op.drop_index("ix_staff_totp_resets_staff_id", table_name="staff_totp_resets")
    op.drop_table("staff_totp_resets")
    op.drop_index("ix_staff_passkeys_staff_id", table_name="staff_passkeys")
    op.drop_table("staff_passkeys")
