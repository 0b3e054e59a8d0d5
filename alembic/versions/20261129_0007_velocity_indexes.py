"""velocity indexes: the held-payout SUMs of the velocity rules as covering range scans

Revision ID: 0007_velocity_indexes
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_velocity_indexes"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, columns): one index per velocity scope, each holding status and amount so that the
# SUM over a window never reads the table (walletsvc.db.repositories.withdrawals).
_INDEXES = (
    ("ix_withdrawals_velocity_wallet", ["wallet_id", "created_at", "status", "amount_sat"]),
    (
        "ix_withdrawals_velocity_destination",
        ["wallet_id", "destination", "created_at", "status", "amount_sat"],
    ),
    (
        "ix_withdrawals_velocity_token",
        ["wallet_id", "token_id", "created_at", "status", "amount_sat"],
    ),
)


def upgrade() -> None:
    for name, columns in _INDEXES:
        op.create_index(name, "withdrawals", columns)


def downgrade() -> None:
    for name, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name="withdrawals")
