"""Withdrawals (payout requests) and the idempotency keys that deduplicate them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    String,
    TextClause,
    bindparam,
    func,
    literal,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.orm import defer

from walletsvc.db.models import (
    VELOCITY_BUCKET_SECONDS,
    ChainTransaction,
    IdempotencyKey,
    UTCDateTime,
    Withdrawal,
)
from walletsvc.db.outbox import (
    WITHDRAWAL_STATUS_CHANGED,
    outbox_event,
    withdrawal_status_payload,
)
from walletsvc.db.repositories.base import Repository, in_chunks
from walletsvc.domain.withdrawal import HOLDING_STATUSES, WithdrawalStatus

# Requests accepted but not yet signed: they hold funds of the wallet.
_AWAITING = [WithdrawalStatus.PENDING_APPROVAL.value, WithdrawalStatus.APPROVED.value]


@dataclass(frozen=True)
class HeldWindow:
    """One velocity window's query: payouts since ``since``, narrowed to ``destination``
    if given, and to ``token_id`` if ``by_token``."""

    since: datetime
    destination: str | None = None
    token_id: str | None = None
    by_token: bool = False


class WithdrawalRepository(Repository[Withdrawal]):
    model = Withdrawal

    def awaiting_total(self, wallet_id: str) -> int:
        """Satoshis of the wallet's withdrawals that wait for approval or for signing."""
        return int(
            self.session.scalar(
                select(func.coalesce(func.sum(Withdrawal.amount_sat), 0)).where(
                    Withdrawal.wallet_id == wallet_id, Withdrawal.status.in_(_AWAITING)
                )
            )
            or 0
        )

    def wallets_with_unsigned_approved(self) -> list[str]:
        """Wallets with approved payouts not yet in a signed transaction."""
        return list(
            self.session.scalars(
                select(Withdrawal.wallet_id).where(*_unsigned_approved()).distinct()
            )
        )

    def approved_with_transaction(self) -> list[Withdrawal]:
        """Approved payouts that already belong to a transaction: no service path makes one
        (approved -> signed sets the link, and nothing goes back), so each is a row edited
        behind our back, a paid payout flipped back to be paid again."""
        return list(
            self.session.scalars(
                select(Withdrawal).where(
                    Withdrawal.status == WithdrawalStatus.APPROVED.value,
                    Withdrawal.transaction_id.is_not(None),
                )
            )
        )

    def unsigned_approved_backlog(self, wallet_id: str) -> tuple[int, datetime | None]:
        """How many approved payouts of the wallet wait for signing, and the oldest update."""
        count, oldest = self.session.execute(
            select(func.count(Withdrawal.id), func.min(Withdrawal.updated_at)).where(
                Withdrawal.wallet_id == wallet_id, *_unsigned_approved()
            )
        ).one()
        return int(count), oldest

    def sent_to_approvals(self, withdrawal_ids: Sequence[str]) -> set[str]:
        """Which of these payouts the policy sent to approvals: their decision's outcome, read
        in SQL (``unsigned_approved`` leaves the decision unloaded; loading it per payout cost
        a query each, seconds for a round)."""
        outcome = Withdrawal.decision["outcome"].as_string()
        found: set[str] = set()
        for chunk in in_chunks(withdrawal_ids):
            found.update(
                self.session.scalars(
                    select(Withdrawal.id).where(
                        Withdrawal.id.in_(chunk), outcome == "require_approval"
                    )
                )
            )
        return found

    def unsigned_approved(self, wallet_id: str, *, limit: int) -> list[Withdrawal]:
        """The wallet's approved payouts waiting for signing, oldest first (the next batch);
        a payout round's in the order of its request."""
        return list(
            self.session.scalars(
                select(Withdrawal)
                # The signer never reads the decision: not decoding thousands of JSON traces.
                .options(defer(Withdrawal.decision))
                .where(Withdrawal.wallet_id == wallet_id, *_unsigned_approved())
                .order_by(Withdrawal.created_at, Withdrawal.round_index, Withdrawal.id)
                .limit(limit)
            )
        )

    def of_transaction(self, transaction_id: str, *, status: str | None = None) -> list[Withdrawal]:
        query = select(Withdrawal).where(Withdrawal.transaction_id == transaction_id)
        if status is not None:
            query = query.where(Withdrawal.status == status)
        return list(self.session.scalars(query))

    def in_transaction(self, transaction_id: str, statuses: Sequence[str]) -> list[Withdrawal]:
        """The payouts of a transaction in ``statuses``, in the order they were requested."""
        return list(
            self.session.scalars(
                select(Withdrawal)
                .where(
                    Withdrawal.transaction_id == transaction_id,
                    Withdrawal.status.in_(list(statuses)),
                )
                .order_by(Withdrawal.created_at, Withdrawal.id)
            )
        )

    def any_in_transaction(self, transaction_id: str, status: str) -> bool:
        return (
            self.session.scalar(
                select(Withdrawal.id)
                .where(Withdrawal.transaction_id == transaction_id, Withdrawal.status == status)
                .limit(1)
            )
            is not None
        )

    def any_in_transactions_with_status(
        self, wallet_id: str, *, withdrawal_status: str, transaction_status: str
    ) -> bool:
        """Whether a payout of the wallet in ``withdrawal_status`` sits in a transaction in
        ``transaction_status`` (signed payouts held by a voided transaction)."""
        return (
            self.session.scalar(
                select(Withdrawal.id)
                .join(ChainTransaction, ChainTransaction.id == Withdrawal.transaction_id)
                .where(
                    Withdrawal.wallet_id == wallet_id,
                    ChainTransaction.status == transaction_status,
                    Withdrawal.status == withdrawal_status,
                )
                .limit(1)
            )
            is not None
        )

    def ids_in_transaction(self, transaction_id: str, statuses: Sequence[str]) -> list[str]:
        return list(
            self.session.scalars(
                select(Withdrawal.id).where(
                    Withdrawal.transaction_id == transaction_id,
                    Withdrawal.status.in_(list(statuses)),
                )
            )
        )

    def set_status(self, ids: Sequence[str], status: str, *, now: datetime) -> None:
        """A bulk status change (the caller checked the transition)."""
        self._emit_status_changes(Withdrawal.id.in_(list(ids)), status)
        self.session.execute(
            update(Withdrawal)
            .where(Withdrawal.id.in_(list(ids)))
            .values(status=status, updated_at=now)
        )

    def move_in_transaction(
        self, transaction_id: str, from_status: str, to_status: str, *, now: datetime
    ) -> None:
        """Move the transaction's payouts in ``from_status`` to ``to_status`` (a reorg)."""
        moving = (Withdrawal.transaction_id == transaction_id) & (Withdrawal.status == from_status)
        self._emit_status_changes(moving, to_status)
        self.session.execute(
            update(Withdrawal)
            .where(Withdrawal.transaction_id == transaction_id, Withdrawal.status == from_status)
            .values(status=to_status, updated_at=now)
        )

    def _emit_status_changes(self, which: ColumnElement[bool], status: str) -> None:
        # A bulk UPDATE bypasses the flush that catches attribute changes
        # (walletsvc.db.outbox), so the payouts it moves are read first and told here.
        rows = self.session.execute(
            select(
                Withdrawal.id, Withdrawal.reference, Withdrawal.amount_sat, Withdrawal.status
            ).where(which, Withdrawal.status != status)
        )
        for row_id, reference, amount_sat, previous in rows:
            payload = withdrawal_status_payload(
                row_id,
                reference=reference,
                amount_sat=amount_sat,
                status=status,
                previous_status=previous,
            )
            self.session.add(outbox_event(WITHDRAWAL_STATUS_CHANGED, payload))

    def with_ids(self, ids: Sequence[str]) -> list[Withdrawal]:
        return list(self.session.scalars(select(Withdrawal).where(Withdrawal.id.in_(list(ids)))))

    def first_created_by_destination(
        self, wallet_id: str, destinations: Sequence[str], statuses: Sequence[str]
    ) -> list[tuple[str, datetime]]:
        """(destination, earliest request) of the wallet's payouts in ``statuses``."""
        rows = self.session.execute(
            select(Withdrawal.destination, func.min(Withdrawal.created_at))
            .where(
                Withdrawal.wallet_id == wallet_id,
                Withdrawal.destination.in_(list(destinations)),
                Withdrawal.status.in_(list(statuses)),
            )
            .group_by(Withdrawal.destination)
        ).all()
        return [(destination, at) for destination, at in rows]

    def with_statuses(self, statuses: Sequence[str]) -> list[Withdrawal]:
        return list(
            self.session.scalars(select(Withdrawal).where(Withdrawal.status.in_(list(statuses))))
        )

    def with_statuses_of_wallets(
        self, statuses: Sequence[str], wallet_ids: Sequence[str] | None
    ) -> list[Withdrawal]:
        """Payouts in ``statuses`` (of these wallets; None: of every wallet), oldest first."""
        query = select(Withdrawal).where(Withdrawal.status.in_(list(statuses)))
        if wallet_ids is not None:
            query = query.where(Withdrawal.wallet_id.in_(list(wallet_ids)))
        return list(self.session.scalars(query.order_by(Withdrawal.created_at, Withdrawal.id)))

    def count_by_status(self) -> dict[str, int]:
        rows = self.session.execute(
            select(Withdrawal.status, func.count()).group_by(Withdrawal.status)
        ).all()
        return {status: int(count) for status, count in rows}

    def with_status(self, status: str) -> list[Withdrawal]:
        return list(self.session.scalars(select(Withdrawal).where(Withdrawal.status == status)))

    def page(
        self,
        *,
        status: str | None,
        wallet_id: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
        reference: str | None = None,
    ) -> list[Withdrawal]:
        """Newest first, ``limit`` rows older than ``before`` (a row's created_at and id)."""
        query = self._filtered(status, wallet_id, reference)
        if before is not None:
            after, last_id = before
            query = query.where(
                (Withdrawal.created_at < after)
                | ((Withdrawal.created_at == after) & (Withdrawal.id < last_id))
            )
        return list(
            self.session.scalars(
                query.order_by(Withdrawal.created_at.desc(), Withdrawal.id.desc()).limit(limit)
            )
        )

    def changed_since(
        self,
        *,
        status: str | None,
        wallet_id: str | None,
        reference: str | None,
        since: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Withdrawal]:
        """Oldest change first: rows updated at or after ``since`` and past ``after`` (the
        (updated_at, id) of the last row of the previous page), for polling."""
        query = self._filtered(status, wallet_id, reference).where(Withdrawal.updated_at >= since)
        if after is not None:
            changed_at, last_id = after
            query = query.where(
                (Withdrawal.updated_at > changed_at)
                | ((Withdrawal.updated_at == changed_at) & (Withdrawal.id > last_id))
            )
        ordered = query.order_by(Withdrawal.updated_at, Withdrawal.id).limit(limit)
        return list(self.session.scalars(ordered))

    @staticmethod
    def _filtered(status: str | None, wallet_id: str | None, reference: str | None) -> Any:
        query = select(Withdrawal)
        if status is not None:
            query = query.where(Withdrawal.status == status)
        if wallet_id is not None:
            query = query.where(Withdrawal.wallet_id == wallet_id)
        if reference is not None:
            query = query.where(Withdrawal.reference == reference)
        return query

    def held_since(
        self, wallet_id: str, since: datetime, statuses: Sequence[str]
    ) -> list[tuple[int, str, str | None, datetime]]:
        """(amount, destination, token, created_at) of the wallet's payouts in ``statuses``."""
        rows = self.session.execute(
            select(
                Withdrawal.amount_sat,
                Withdrawal.destination,
                Withdrawal.token_id,
                Withdrawal.created_at,
            ).where(
                Withdrawal.wallet_id == wallet_id,
                Withdrawal.created_at >= since,
                Withdrawal.status.in_(list(statuses)),
            )
        ).all()
        return [(a, d, t, c) for a, d, t, c in rows]

    def held_total_since(
        self,
        wallet_id: str,
        since: datetime,
        statuses: Sequence[str],
        *,
        destination: str | None = None,
        token_id: str | None = None,
        by_token: bool = False,
    ) -> tuple[int, int]:
        """(satoshis, count) of the wallet's payouts in ``statuses`` created at or after
        ``since``, to ``destination`` if given, made with ``token_id`` if ``by_token``.

        One range scan of an ix_withdrawals_velocity_* index (which also holds status and
        amount), so the rows themselves are never read.
        """
        return self.held_totals_since(
            wallet_id, statuses, [HeldWindow(since, destination, token_id, by_token)]
        )[0]

    def held_totals_since(
        self, wallet_id: str, statuses: Sequence[str], windows: Sequence[HeldWindow]
    ) -> list[tuple[int, int]]:
        """``held_total_since`` for several windows in one statement (one round trip; each
        part is still its own index range scan), in the order of ``windows``."""
        parts = []
        for position, window in enumerate(windows):
            conditions = [
                Withdrawal.wallet_id == wallet_id,
                Withdrawal.created_at >= window.since,
                Withdrawal.status.in_(list(statuses)),
            ]
            if window.destination is not None:
                conditions.append(Withdrawal.destination == window.destination)
            if window.by_token and window.token_id is None:
                conditions.append(Withdrawal.token_id.is_(None))
            elif window.by_token:
                conditions.append(Withdrawal.token_id == window.token_id)
            parts.append(
                select(
                    literal(position).label("position"),
                    func.coalesce(func.sum(Withdrawal.amount_sat), 0).label("total"),
                    func.count().label("count"),
                ).where(*conditions)
            )
        if not parts:
            return []
        rows = self.session.execute(union_all(*parts) if len(parts) > 1 else parts[0]).all()
        by_position = {int(p): (int(t), int(c)) for p, t, c in rows}
        return [by_position[i] for i in range(len(windows))]

    def counted_totals_since(
        self, wallet_id: str, windows: Sequence[HeldWindow]
    ) -> list[tuple[int, int]]:
        """``held_totals_since`` over the holding statuses, from the velocity counters: per
        window, the buckets after the one ``since`` falls in (a bounded range of counter
        rows, however many payouts they count) plus the rows of that oldest, partial bucket
        from ``since`` on (at most one bucket's payouts). One statement for all windows."""
        if not windows:
            return []
        params: dict[str, Any] = {"wallet": wallet_id}
        for i, window in enumerate(windows):
            first_full = bucket_of(window.since) + 1
            params |= {
                f"key{i}": _counter_scope(window)[1],
                f"first{i}": first_full,
                f"since{i}": window.since,
                f"edge{i}": bucket_start(first_full),
            }
        statement = _counted_totals_statement(tuple(_counter_shape(w) for w in windows))
        totals = [(0, 0)] * len(windows)
        for p, t, c in self.session.execute(statement, params).all():
            amount, count = totals[int(p)]
            totals[int(p)] = (amount + int(t), count + int(c))
        return totals

    def held_to_destination_since(
        self, wallet_id: str, destination: str, since: datetime, statuses: Sequence[str]
    ) -> list[tuple[int, str, str | None, datetime]]:
        """``held_since`` narrowed to one destination (the trust ramp's view), indexed."""
        rows = self.session.execute(
            select(
                Withdrawal.amount_sat,
                Withdrawal.destination,
                Withdrawal.token_id,
                Withdrawal.created_at,
            ).where(
                Withdrawal.wallet_id == wallet_id,
                Withdrawal.destination == destination,
                Withdrawal.created_at >= since,
                Withdrawal.status.in_(list(statuses)),
            )
        ).all()
        return [(a, d, t, c) for a, d, t, c in rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET = timedelta(seconds=VELOCITY_BUCKET_SECONDS)


def bucket_of(moment: datetime) -> int:
    """The velocity counter bucket ``moment`` falls in (as the migration's triggers compute
    it from ``created_at``: whole seconds since the epoch over the bucket width)."""
    return (moment - _EPOCH) // _BUCKET


def bucket_start(bucket: int) -> datetime:
    return _EPOCH + bucket * _BUCKET


def _counter_scope(window: HeldWindow) -> tuple[str, str]:
    if window.destination is not None:
        return "destination", window.destination
    if window.by_token:
        return "token", window.token_id or ""
    return "wallet", ""


def _counter_shape(window: HeldWindow) -> str:
    """What a window's part of the statement looks like: its scope, and a token window of
    requests made without a token (``IS NULL`` on the rows)."""
    scope = _counter_scope(window)[0]
    return "token_null" if scope == "token" and window.token_id is None else scope


_ROW_FILTER = {
    "wallet": "",
    "destination": " AND destination = :key{i}",
    "token": " AND token_id = :key{i}",
    "token_null": " AND token_id IS NULL",
}
_HOLDING_SQL = ", ".join(f"'{s.value}'" for s in sorted(HOLDING_STATUSES))


@functools.lru_cache(maxsize=64)
def _counted_totals_statement(shapes: tuple[str, ...]) -> TextClause:
    """The velocity totals statement for windows of these shapes, built once: building and
    compiling the equivalent Core union on every request cost more than running it (7 ms
    against 0.2 ms on SQLite). Only constants of this module go into the text."""
    parts = []
    for i, shape in enumerate(shapes):
        scope = "token" if shape == "token_null" else shape
        parts.append(
            f"SELECT {i} AS position, coalesce(sum(amount_sat), 0) AS total,"  # noqa: S608
            " coalesce(sum(payouts), 0) AS count FROM velocity_buckets"
            f" WHERE wallet_id = :wallet AND scope = '{scope}' AND scope_key = :key{i}"
            f" AND bucket >= :first{i}"
        )
        parts.append(
            f"SELECT {i}, coalesce(sum(amount_sat), 0), count(*) FROM withdrawals"  # noqa: S608
            f" WHERE wallet_id = :wallet AND created_at >= :since{i} AND created_at < :edge{i}"
            f" AND status IN ({_HOLDING_SQL}){_ROW_FILTER[shape].format(i=i)}"
        )
    binds: list[BindParameter[Any]] = [bindparam("wallet", type_=String())]
    for i in range(len(shapes)):
        binds += [
            bindparam(f"key{i}", type_=String()),
            bindparam(f"first{i}", type_=BigInteger()),
            bindparam(f"since{i}", type_=UTCDateTime()),
            bindparam(f"edge{i}", type_=UTCDateTime()),
        ]
    return text(" UNION ALL ".join(parts)).bindparams(*binds)


def _unsigned_approved() -> tuple[ColumnElement[bool], ...]:
    return (
        Withdrawal.status == WithdrawalStatus.APPROVED.value,
        Withdrawal.transaction_id.is_(None),
    )


class IdempotencyKeyRepository(Repository[IdempotencyKey]):
    model = IdempotencyKey

    def for_token_keys(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], IdempotencyKey]:
        """``by_token_and_key`` for many (token, key) pairs in one statement."""
        if not pairs:
            return {}
        rows = self.session.scalars(
            select(IdempotencyKey).where(
                tuple_(IdempotencyKey.token_id, IdempotencyKey.key).in_(list(set(pairs)))
            )
        )
        return {(row.token_id, row.key): row for row in rows}

    def by_token_and_key(self, token_id: str, key: str) -> IdempotencyKey | None:
        return self.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.token_id == token_id, IdempotencyKey.key == key
            )
        )
