"""policy proposals: the base policy version and a time lock counted in blocks too

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("policy_proposals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("effective_height", sa.Integer(), nullable=True))
    # A proposal already time-locked starts counting its blocks now: its lock then ends no
    # sooner than it would have, and never without blocks. Ten minutes a block, rounded up,
    # as walletsvc.governance.policy_changes.timelock_blocks.
    op.execute(
        "UPDATE policy_proposals SET effective_height = "
        "(SELECT COALESCE(MAX(height), 0) FROM scanned_blocks) + (timelock_s + 599) / 600 "
        "WHERE status = 'time_locked'"
    )


def downgrade() -> None:
    with op.batch_alter_table("policy_proposals", schema=None) as batch_op:
        batch_op.drop_column("effective_height")
        batch_op.drop_column("base_version")
