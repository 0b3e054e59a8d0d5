"""TOTP secrets leave the database: the signer holds them

The signer (walletsvc.signer.people) makes each member's TOTP secret, seals it under its own
key and checks every code itself. Members enrolled before this revision have their secret
sealed under the service's KEK in ``staff.totp_secret_enc``: it is unsealed one last time and
imported into the signer while its genesis is open (``enrol_staff`` with ``totp_secret``), a
disabled member disabled there too; then the column goes. ``staff_changes`` holds the
enrolments asked for after genesis (governed, kind ``staff_change``). A pending
authenticator reset's new secret goes with ``staff_totp_resets.totp_secret_enc``: such a
reset is applied, once approved, with a secret the signer makes
(walletsvc.governance.totp_resets).

The import needs the KEK and a reachable signer: ``walletsvc migrate`` (and ``init``) hand this
migration an importer (``config.attributes["totp_import"]``). Without one, a database whose
members still hold secrets is refused rather than losing their authenticators.

Revision ID: 0016_sigev
Revises: 0015_signer_seeds_out_of_db
Create Date: 2026-11-29
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import walletsvc.db.models

revision: str = "0016_sigev"
down_revision: str | Sequence[str] | None = "0015_signer_seeds_out_of_db"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT id, username, role, groups, totp_secret_enc, disabled_at FROM staff "
                "WHERE totp_secret_enc <> '' ORDER BY username"
            )
        )
        .mappings()
        .all()
    )
    if rows:
        importer = context.config.attributes.get("totp_import")
        if importer is None:
            raise RuntimeError(
                f"{len(rows)} staff member(s) hold a TOTP secret in the database: run "
                "`walletsvc migrate` with the KEK and the signer reachable (its genesis open) "
                "so that they move into the signer"
            )
        for row in rows:
            groups = row["groups"]
            importer(
                {
                    "staff_id": row["id"],
                    "username": row["username"],
                    "role": row["role"],
                    "groups": json.loads(groups) if isinstance(groups, str) else list(groups),
                    "sealed": row["totp_secret_enc"],
                    "disabled": row["disabled_at"] is not None,
                }
            )
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("totp_secret_enc")
    with op.batch_alter_table("staff_totp_resets", schema=None) as batch_op:
        batch_op.drop_column("totp_secret_enc")
    op.create_table(
        "staff_changes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("staff_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("approval_request_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", walletsvc.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_changes")),
    )
    with op.batch_alter_table("staff_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_changes_staff_id"), ["staff_id"], unique=False)


def downgrade() -> None:
    # The secrets stay in the signer: a downgraded service cannot check codes by itself.
    op.drop_table("staff_changes")
    with op.batch_alter_table("staff_totp_resets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("totp_secret_enc", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("totp_secret_enc", sa.Text(), nullable=False, server_default="")
        )
