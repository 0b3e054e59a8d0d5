"""integrity tags on refills from cold (the proposal: cold destination, amounts, hot address,
the exact transaction) and on time-locked policy proposals (the time lock's end)

Refills proposed before this revision have no tag and are refused when signatures are
uploaded (and named by `walletsvc audit verify`): cancel them and propose again. A loosening
already time-locked before this revision fails closed when its lock ends (status `failed`,
audited): propose it again.

Revision ID: 0017_anchor
Revises: 0016_sigev
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_anchor"
down_revision: str | Sequence[str] | None = "0016_sigev"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("refills", "policy_proposals"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("policy_proposals", "refills"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("mac")
