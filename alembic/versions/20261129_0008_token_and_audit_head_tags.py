"""integrity tags on api tokens (id, name, hash, scopes, revocation) and the audit head

Tokens created before this revision have no tag and are refused at use: re-issue them with
`walletsvc token create` (and revoke the old ones with `walletsvc token revoke`). The audit
head is tagged by the next audited write.

Revision ID: 0008_token_and_audit_head_tags
Revises: 0007_velocity_indexes
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_token_and_audit_head_tags"
down_revision: str | Sequence[str] | None = "0007_velocity_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("mac")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("mac")
