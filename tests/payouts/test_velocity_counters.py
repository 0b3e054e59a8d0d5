"""The velocity counters (``velocity_buckets``, kept by the triggers of migration 0018) equal
the row sums after any sequence of payout writes, in the real database (SQLite, and
PostgreSQL when configured): inserts, the state machine's transitions one row at a time and
in bulk, edits behind the service's back and deletes. And the windows read from them equal
the windows summed from the rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from tests.conftest import WALLET
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings
from walletsvc.db.migrate import alembic_config, upgrade
from walletsvc.db.models import VELOCITY_BUCKET_SECONDS, VelocityBucket, Withdrawal
from walletsvc.db.repositories.withdrawals import HeldWindow, bucket_of
from walletsvc.domain.withdrawal import ALLOWED_TRANSITIONS, HOLDING_STATUSES, WithdrawalStatus
from walletsvc.wallets.service import get_wallet

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DESTS = ["bcrt1qaaa", "bcrt1qbbb"]
TOKENS = ["tok-1", "tok-2", None]
STATUSES = list(WithdrawalStatus)
HELD = [s.value for s in HOLDING_STATUSES]

# Creation times around bucket edges (exactly on one, a microsecond either side) and anywhere.
_EDGE = NOW.replace(minute=0)
ages = st.one_of(
    st.sampled_from([0, 1, VELOCITY_BUCKET_SECONDS, VELOCITY_BUCKET_SECONDS + 1]).map(
        lambda s: _EDGE - timedelta(seconds=s)
    ),
    st.integers(-1, 1).map(lambda us: _EDGE - timedelta(microseconds=us)),
    st.integers(-600_000_000, 90_000_000_000).map(lambda us: NOW - timedelta(microseconds=us)),
)


@dataclass(frozen=True)
class Insert:
    status: WithdrawalStatus
    destination: str
    token_id: str | None
    amount_sat: int
    created_at: datetime


@dataclass(frozen=True)
class Move:
    """The state machine's next step for the row at ``pick`` (one ORM row, as services do)."""

    pick: int
    choice: int


@dataclass(frozen=True)
class BulkMove:
    """``WithdrawalRepository.set_status`` on a few rows (the worker's bulk path)."""

    picks: tuple[int, ...]
    status: WithdrawalStatus


@dataclass(frozen=True)
class Tamper:
    """SQL behind the service's back: any status, amount, time or destination."""

    pick: int
    status: WithdrawalStatus
    amount_sat: int
    created_at: datetime
    destination: str


@dataclass(frozen=True)
class Delete:
    pick: int


amounts = st.integers(1, 2_100_000_000_000_000)
operations = st.lists(
    st.one_of(
        st.builds(
            Insert,
            st.sampled_from(STATUSES),
            st.sampled_from(DESTS),
            st.sampled_from(TOKENS),
            amounts,
            ages,
        ),
        st.builds(Move, st.integers(0, 50), st.integers(0, 5)),
        st.builds(
            BulkMove, st.tuples(st.integers(0, 50), st.integers(0, 50)), st.sampled_from(STATUSES)
        ),
        st.builds(
            Tamper,
            st.integers(0, 50),
            st.sampled_from(STATUSES),
            amounts,
            ages,
            st.sampled_from(DESTS),
        ),
        st.builds(Delete, st.integers(0, 50)),
    ),
    max_size=12,
)


def _apply(runtime: Runtime, wallet_id: str, op: object) -> None:
    with runtime.db.write() as uow:
        ids = list(
            uow.session.scalars(
                select(Withdrawal.id)
                .where(Withdrawal.wallet_id == wallet_id)
                .order_by(Withdrawal.id)
            )
        )
        if isinstance(op, Insert):
            uow.withdrawals.add(
                Withdrawal(
                    wallet_id=wallet_id,
                    token_id=op.token_id,
                    destination=op.destination,
                    script_pubkey="00",
                    amount_sat=op.amount_sat,
                    status=op.status.value,
                    decision={"outcome": "allow", "rules": [], "required": None},
                    policy_hash="0" * 64,
                    created_at=op.created_at,
                    updated_at=NOW,
                ),
                flush=True,
            )
            return
        if not ids:
            return
        if isinstance(op, Move):
            row = uow.session.get(Withdrawal, ids[op.pick % len(ids)])
            assert row is not None
            targets = sorted(ALLOWED_TRANSITIONS[WithdrawalStatus(row.status)])
            if targets:
                row.status = targets[op.choice % len(targets)].value
        elif isinstance(op, BulkMove):
            chosen = sorted({ids[p % len(ids)] for p in op.picks})
            uow.withdrawals.set_status(chosen, op.status.value, now=NOW)
        elif isinstance(op, Tamper):
            uow.session.execute(
                update(Withdrawal)
                .where(Withdrawal.id == ids[op.pick % len(ids)])
                .values(
                    status=op.status.value,
                    amount_sat=op.amount_sat,
                    created_at=op.created_at,
                    destination=op.destination,
                )
            )
        elif isinstance(op, Delete):
            uow.session.execute(delete(Withdrawal).where(Withdrawal.id == ids[op.pick % len(ids)]))


def _from_rows(runtime: Runtime, wallet_id: str) -> Counter[tuple[str, str, int, str]]:
    expected: Counter[tuple[str, str, int, str]] = Counter()
    with runtime.db.read() as uow:
        rows = uow.withdrawals.held_since(wallet_id, datetime(1970, 1, 2, tzinfo=UTC), HELD)
    for amount, destination, token_id, created_at in rows:
        bucket = bucket_of(created_at)
        for scope, key in (("wallet", ""), ("destination", destination), ("token", token_id or "")):
            expected[(scope, key, bucket, "amount")] += amount
            expected[(scope, key, bucket, "count")] += 1
    return expected


def _counters(runtime: Runtime, wallet_id: str) -> Counter[tuple[str, str, int, str]]:
    found: Counter[tuple[str, str, int, str]] = Counter()
    with runtime.db.read() as uow:
        for row in uow.session.scalars(
            select(VelocityBucket).where(VelocityBucket.wallet_id == wallet_id)
        ):
            found[(row.scope, row.scope_key, row.bucket, "amount")] += row.amount_sat
            found[(row.scope, row.scope_key, row.bucket, "count")] += row.payouts
    return +found  # zero counters (everything in them left its holding status) dropped


def _windows() -> list[HeldWindow]:
    windows = []
    for seconds in (1, 299, 300, 301, 3600, 86_400, 86_401):
        since = NOW - timedelta(seconds=seconds)
        windows.append(HeldWindow(since))
        windows += [HeldWindow(since, destination=d) for d in DESTS]
        windows += [HeldWindow(since, token_id=t, by_token=True) for t in TOKENS]
    return windows


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_counters_equal_the_row_sums_after_any_writes(runtime: Runtime, ops: list[object]) -> None:
    with runtime.db.write() as uow:
        wallet_id = get_wallet(uow, WALLET).id
        # A fresh history per example: the delete trigger must bring every counter to zero.
        uow.session.execute(delete(Withdrawal).where(Withdrawal.wallet_id == wallet_id))
    assert _counters(runtime, wallet_id) == Counter()
    for op in ops:
        _apply(runtime, wallet_id, op)
        assert _counters(runtime, wallet_id) == _from_rows(runtime, wallet_id)
    windows = _windows()
    with runtime.db.read() as uow:
        assert uow.withdrawals.counted_totals_since(
            wallet_id, windows
        ) == uow.withdrawals.held_totals_since(wallet_id, HELD, windows)


def test_the_migration_backfills_the_counters_from_existing_rows(
    runtime: Runtime, settings: Settings
) -> None:
    with runtime.db.read() as uow:
        wallet_id = get_wallet(uow, WALLET).id
    for i, status in enumerate([*STATUSES, *STATUSES]):
        op = Insert(status, DESTS[i % 2], TOKENS[i % 3], 1_000 + i, NOW - timedelta(minutes=7 * i))
        _apply(runtime, wallet_id, op)
    before = _from_rows(runtime, wallet_id)
    assert before  # some rows hold
    runtime.db.engine.dispose()  # no idle connection holds the table the downgrade drops
    command.downgrade(alembic_config(settings.database_url), "0015_signer_seeds_out_of_db")
    upgrade(settings.database_url)
    assert _counters(runtime, wallet_id) == before
