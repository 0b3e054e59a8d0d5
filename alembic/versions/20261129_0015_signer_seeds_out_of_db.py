"""seeds leave the database: key_epochs.encrypted_seed becomes optional

The signer process (walletsvc.signer) makes and keeps every seed, sealed under its own key in
its own ledger; the service stores only each epoch's account xpub and fingerprint, so new
key epochs have no seed column value. The column stays (nullable) for databases made before
this revision: the signer cannot read their KEK ciphertexts; revision 0019 imports them into
the signer and clears the column.

Revision ID: 0015_signer_seeds_out_of_db
Revises: 0014_scale_locks_and_lease
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_signer_seeds_out_of_db"
down_revision: str | Sequence[str] | None = "0014_scale_locks_and_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("key_epochs", schema=None) as batch_op:
        batch_op.alter_column("encrypted_seed", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # Rows made by the signer have no ciphertext: an empty string keeps NOT NULL satisfiable.
    op.execute("UPDATE key_epochs SET encrypted_seed = '' WHERE encrypted_seed IS NULL")
    with op.batch_alter_table("key_epochs", schema=None) as batch_op:
        batch_op.alter_column("encrypted_seed", existing_type=sa.Text(), nullable=False)
