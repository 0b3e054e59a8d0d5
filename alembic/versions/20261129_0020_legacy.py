"""seeds of key epochs made before the signer move into it; key_epochs.encrypted_seed cleared

Before revision 0015 the service made each wallet's seed and sealed it under its KEK in
``key_epochs.encrypted_seed``: the signer cannot open that ciphertext, so such an epoch could
neither sign nor be rotated away from. Each one is opened with the KEK one last time and its
recovery words handed to the signer (``import_seed``, only while its genesis is open, and only
if they derive the account xpub this row holds), then the column is cleared (NULL) on every
row: no seed material stays in the database. Empty strings (left by 0015's downgrade) are
cleared too.

The import needs the KEK and a reachable signer: ``walletsvc migrate`` (and ``init``) hand this
migration an importer (``config.attributes["seed_import"]``,
walletsvc.bootstrap.seed_import). Without one, or with the signer's genesis closed, a database
holding such seeds is refused rather than left with epochs nothing can sign for.

Revision ID: 0020_legacy
Revises: 0019_staffgov
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0020_legacy"
down_revision: str | Sequence[str] | None = "0019_staffgov"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT w.name AS wallet, k.epoch, k.encrypted_seed, k.account_xpub "
                "FROM key_epochs k JOIN wallets w ON w.id = k.wallet_id "
                "WHERE k.encrypted_seed IS NOT NULL AND k.encrypted_seed <> '' "
                "ORDER BY w.name, k.epoch"
            )
        )
        .mappings()
        .all()
    )
    if rows:
        importer = context.config.attributes.get("seed_import")
        if importer is None:
            raise RuntimeError(
                f"{len(rows)} key epoch(s) hold a seed sealed under the KEK in the database: run "
                "`walletsvc migrate` with the KEK and the signer reachable (its genesis open) "
                "so that they move into the signer"
            )
        for row in rows:
            importer(
                {
                    "wallet": row["wallet"],
                    "epoch": row["epoch"],
                    "sealed": row["encrypted_seed"],
                    "account_xpub": row["account_xpub"],
                }
            )
    op.execute("UPDATE key_epochs SET encrypted_seed = NULL WHERE encrypted_seed IS NOT NULL")


def downgrade() -> None:
    # The seeds stay in the signer, sealed under its key: nothing goes back to the database.
    pass
