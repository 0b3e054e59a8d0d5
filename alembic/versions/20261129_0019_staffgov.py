"""A governed staff change carries an integrity tag (its password hash included)

``staff_changes.password_hash`` becomes the new member's password when the enrolment is
applied: a database writer could have set it. The row's tag (walletsvc.db.tags
.staff_change_message) covers it now, checked at apply and by ``walletsvc audit verify``.
No KEK here to tag rows already open: an enrolment still pending or approved when this
revision runs fails its check and is refused at apply; ask for it again.

Revision ID: 0019_staffgov
Revises: 0018_velocity_buckets
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_staffgov"
down_revision: str | Sequence[str] | None = "0018_velocity_buckets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_changes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mac", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("staff_changes", schema=None) as batch_op:
        batch_op.drop_column("mac")
