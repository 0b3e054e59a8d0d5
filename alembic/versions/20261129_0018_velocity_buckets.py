"""velocity counters: per-wallet, per-scope 5-minute buckets of holding payouts, kept by triggers

``velocity_buckets`` holds, per (wallet, scope, scope key, bucket), the satoshis and count of
the wallet's payouts in a holding status (pending_approval, approved, signed, broadcast,
confirmed) created in that bucket: scope ``wallet`` (key ''), ``destination`` (the address)
and ``token`` (the API token id, '' for none). Triggers on ``withdrawals`` keep it in the
statement that inserts, updates or deletes a payout, whatever code path runs it (intake,
rounds, cancellations, approvals, the worker, a reorg, an operator's SQL), so the counters
always equal the row sums inside the same transaction. Existing rows are backfilled.

PostgreSQL: one statement-level trigger per operation, with transition tables, so a payout
round's 2,000-row INSERT is one grouped upsert. SQLite: row-level triggers (no statement
level there). Both skip an UPDATE that moves nothing between counters (signed -> broadcast,
an ``updated_at`` bump), so the worker's writes never touch counter rows.

Revision ID: 0018_velocity_buckets
Revises: 0017_anchor
Create Date: 2026-11-29
"""

# ruff: noqa: S608 - the SQL below is built only from this module's constants (no input)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_velocity_buckets"
down_revision: str | Sequence[str] | None = "0017_anchor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Fixed here on purpose (a migration is a snapshot): walletsvc.db.models.VELOCITY_BUCKET_SECONDS
# and walletsvc.domain.withdrawal.HOLDING_STATUSES must agree with these
# (tests/payouts/test_velocity_counters.py checks both against the row sums).
BUCKET_SECONDS = 300
HOLDING = "('pending_approval', 'approved', 'signed', 'broadcast', 'confirmed')"
SCOPES = (
    ("wallet", "''"),
    ("destination", "{r}.destination"),
    ("token", "coalesce({r}.token_id, '')"),
)


def _pg_bucket(row: str) -> str:
    return f"floor(extract(epoch from {row}.created_at) / {BUCKET_SECONDS})::bigint"


def _pg_rows(table: str, sign: str) -> str:
    """One signed contribution per (holding row, scope) of a transition table."""
    return " UNION ALL ".join(
        f"SELECT r.wallet_id, '{scope}' AS scope, {key.format(r='r')} AS scope_key,"
        f" {_pg_bucket('r')} AS bucket, {sign}r.amount_sat AS amount_sat, {sign}1 AS payouts"
        f" FROM {table} r WHERE r.status IN {HOLDING}"
        for scope, key in SCOPES
    )


def _pg_apply(contributions: str) -> str:
    # Grouped (one upsert per counter row, which ON CONFLICT requires) and ordered (two
    # transactions touching the same counters lock them in the same order: no deadlock).
    return f"""
        INSERT INTO velocity_buckets AS v (wallet_id, scope, scope_key, bucket, amount_sat, payouts)
        SELECT wallet_id, scope, scope_key, bucket, sum(amount_sat), sum(payouts)
        FROM ({contributions}) AS c
        GROUP BY wallet_id, scope, scope_key, bucket
        HAVING sum(amount_sat) <> 0 OR sum(payouts) <> 0
        ORDER BY wallet_id, scope, scope_key, bucket
        ON CONFLICT (wallet_id, scope, scope_key, bucket) DO UPDATE
        SET amount_sat = v.amount_sat + excluded.amount_sat,
            payouts = v.payouts + excluded.payouts;
    """


PG_FUNCTION = f"""
CREATE FUNCTION velocity_buckets_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_apply(_pg_rows("new_rows", ""))}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_apply(_pg_rows("old_rows", "-"))}
    ELSE
        {_pg_apply(_pg_rows("new_rows", "") + " UNION ALL " + _pg_rows("old_rows", "-"))}
    END IF;
    RETURN NULL;
END;
$$;
"""

PG_TRIGGERS = (
    "CREATE TRIGGER velocity_buckets_insert AFTER INSERT ON withdrawals"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION velocity_buckets_apply()",
    "CREATE TRIGGER velocity_buckets_update AFTER UPDATE ON withdrawals"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION velocity_buckets_apply()",
    "CREATE TRIGGER velocity_buckets_delete AFTER DELETE ON withdrawals"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION velocity_buckets_apply()",
)

# What makes an UPDATE move money between counters: leaving or entering a holding status,
# or a holding row's counted columns changing (only SQL behind the service's back does that).
_COUNTED_CHANGE = (
    "NEW.amount_sat IS NOT OLD.amount_sat OR NEW.created_at IS NOT OLD.created_at"
    " OR NEW.wallet_id IS NOT OLD.wallet_id OR NEW.destination IS NOT OLD.destination"
    " OR NEW.token_id IS NOT OLD.token_id"
)


def _sqlite_bucket(row: str) -> str:
    # Whole seconds cut off as text first: SQLite's date functions round to milliseconds, so
    # '…:59.999999' would land in the next second (and at a bucket's edge, the next bucket).
    return f"CAST(strftime('%s', substr({row}.created_at, 1, 19)) AS INTEGER) / {BUCKET_SECONDS}"


def _sqlite_upserts(row: str, sign: str) -> str:
    bucket = _sqlite_bucket(row)
    return "".join(
        "INSERT INTO velocity_buckets (wallet_id, scope, scope_key, bucket, amount_sat, payouts)"
        f" VALUES ({row}.wallet_id, '{scope}', {key.format(r=row)}, {bucket},"
        f" {sign}{row}.amount_sat, {sign}1)"
        " ON CONFLICT (wallet_id, scope, scope_key, bucket) DO UPDATE"
        " SET amount_sat = amount_sat + excluded.amount_sat,"
        " payouts = payouts + excluded.payouts;\n"
        for scope, key in SCOPES
    )


SQLITE_TRIGGERS = (
    f"CREATE TRIGGER velocity_buckets_insert AFTER INSERT ON withdrawals"
    f" WHEN NEW.status IN {HOLDING} BEGIN {_sqlite_upserts('NEW', '')} END",
    f"CREATE TRIGGER velocity_buckets_delete AFTER DELETE ON withdrawals"
    f" WHEN OLD.status IN {HOLDING} BEGIN {_sqlite_upserts('OLD', '-')} END",
    f"CREATE TRIGGER velocity_buckets_update_old AFTER UPDATE ON withdrawals"
    f" WHEN OLD.status IN {HOLDING} AND (NEW.status NOT IN {HOLDING} OR {_COUNTED_CHANGE})"
    f" BEGIN {_sqlite_upserts('OLD', '-')} END",
    f"CREATE TRIGGER velocity_buckets_update_new AFTER UPDATE ON withdrawals"
    f" WHEN NEW.status IN {HOLDING} AND (OLD.status NOT IN {HOLDING} OR {_COUNTED_CHANGE})"
    f" BEGIN {_sqlite_upserts('NEW', '')} END",
)
SQLITE_TRIGGER_NAMES = (
    "velocity_buckets_insert",
    "velocity_buckets_delete",
    "velocity_buckets_update_old",
    "velocity_buckets_update_new",
)


def upgrade() -> None:
    op.create_table(
        "velocity_buckets",
        sa.Column("wallet_id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=12), nullable=False),
        sa.Column("scope_key", sa.String(length=90), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("payouts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "wallet_id", "scope", "scope_key", "bucket", name=op.f("pk_velocity_buckets")
        ),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    bucket = _pg_bucket("w") if postgres else _sqlite_bucket("w")
    backfill = " UNION ALL ".join(
        f"SELECT w.wallet_id, '{scope}' AS scope, {key.format(r='w')} AS scope_key,"
        f" {bucket} AS bucket, w.amount_sat AS amount_sat FROM withdrawals w"
        f" WHERE w.status IN {HOLDING}"
        for scope, key in SCOPES
    )
    op.execute(
        "INSERT INTO velocity_buckets (wallet_id, scope, scope_key, bucket, amount_sat, payouts)"
        " SELECT wallet_id, scope, scope_key, bucket, sum(amount_sat), count(*)"
        f" FROM ({backfill}) AS c GROUP BY wallet_id, scope, scope_key, bucket"
    )
    if postgres:
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER velocity_buckets_{name} ON withdrawals")
        op.execute("DROP FUNCTION velocity_buckets_apply()")
    else:
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("velocity_buckets")
