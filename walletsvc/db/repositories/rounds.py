"""Payout rounds and the set-at-a-time queries a round's intake needs.

A round of a few thousand payouts is decided in one locked transaction; everything here
answers for all of its payouts in a handful of statements (grouped aggregates, ``IN`` lists
in chunks, one multi-row insert) instead of one round trip per payout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from walletsvc.db.models import ChainTransaction, PayoutRound, Withdrawal
from walletsvc.db.repositories.base import Repository, in_chunks


@dataclass(frozen=True)
class RoundPayoutRow:
    id: str
    index: int
    destination: str
    amount_sat: int
    reference: str | None
    status: str
    txid: str | None


class PayoutRoundRepository(Repository[PayoutRound]):
    model = PayoutRound

    def by_token_and_key(self, token_id: str, key: str) -> PayoutRound | None:
        return self.session.scalar(
            select(PayoutRound).where(
                PayoutRound.token_id == token_id, PayoutRound.idempotency_key == key
            )
        )

    def page(
        self, *, wallet_id: str | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[PayoutRound]:
        """Newest first, ``limit`` rounds older than ``before`` (a round's created_at and id)."""
        query = select(PayoutRound)
        if wallet_id is not None:
            query = query.where(PayoutRound.wallet_id == wallet_id)
        if before is not None:
            after, last_id = before
            query = query.where(
                (PayoutRound.created_at < after)
                | ((PayoutRound.created_at == after) & (PayoutRound.id < last_id))
            )
        return list(
            self.session.scalars(
                query.order_by(PayoutRound.created_at.desc(), PayoutRound.id.desc()).limit(limit)
            )
        )

    def status_counts(self, round_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Round id -> {status: number of its payouts}, for every round named."""
        counts: dict[str, dict[str, int]] = {rid: {} for rid in round_ids}
        for chunk in in_chunks(round_ids):
            rows = self.session.execute(
                select(Withdrawal.round_id, Withdrawal.status, func.count())
                .where(Withdrawal.round_id.in_(chunk))
                .group_by(Withdrawal.round_id, Withdrawal.status)
            ).all()
            for round_id, status, n in rows:
                counts[str(round_id)][str(status)] = int(n)
        return counts

    def payouts(self, round_id: str) -> list[RoundPayoutRow]:
        """The round's withdrawals in request order, each with its transaction's txid (only
        the columns the round's view shows: no ORM object per payout)."""
        rows = self.session.execute(
            select(
                Withdrawal.id,
                Withdrawal.round_index,
                Withdrawal.destination,
                Withdrawal.amount_sat,
                Withdrawal.reference,
                Withdrawal.status,
                ChainTransaction.txid,
            )
            .outerjoin(ChainTransaction, ChainTransaction.id == Withdrawal.transaction_id)
            .where(Withdrawal.round_id == round_id)
            .order_by(Withdrawal.round_index)
        ).all()
        return [RoundPayoutRow(i, index or 0, d, a, r, s, t) for i, index, d, a, r, s, t in rows]

    def held_totals_by_destination(
        self,
        wallet_id: str,
        destinations: Sequence[str],
        since: datetime,
        statuses: Sequence[str],
    ) -> dict[str, tuple[int, int]]:
        """Destination -> (satoshis, count) of the wallet's payouts in ``statuses`` created at
        or after ``since``: the per-destination velocity SUM for many destinations at once
        (grouped range scans of ix_withdrawals_velocity_destination)."""
        totals: dict[str, tuple[int, int]] = {}
        for chunk in in_chunks(destinations):
            rows = self.session.execute(
                select(
                    Withdrawal.destination,
                    func.coalesce(func.sum(Withdrawal.amount_sat), 0),
                    func.count(),
                )
                .where(
                    Withdrawal.wallet_id == wallet_id,
                    Withdrawal.destination.in_(chunk),
                    Withdrawal.created_at >= since,
                    Withdrawal.status.in_(list(statuses)),
                )
                .group_by(Withdrawal.destination)
            ).all()
            for destination, amount, count in rows:
                totals[str(destination)] = (int(amount), int(count))
        return totals

    def held_to_destinations_since(
        self,
        wallet_id: str,
        destinations: Sequence[str],
        since: datetime,
        statuses: Sequence[str],
    ) -> list[tuple[int, str, str | None, datetime]]:
        """``WithdrawalRepository.held_to_destination_since`` for many destinations at once."""
        found: list[tuple[int, str, str | None, datetime]] = []
        for chunk in in_chunks(destinations):
            rows = self.session.execute(
                select(
                    Withdrawal.amount_sat,
                    Withdrawal.destination,
                    Withdrawal.token_id,
                    Withdrawal.created_at,
                ).where(
                    Withdrawal.wallet_id == wallet_id,
                    Withdrawal.destination.in_(chunk),
                    Withdrawal.created_at >= since,
                    Withdrawal.status.in_(list(statuses)),
                )
            ).all()
            found.extend((a, d, t, c) for a, d, t, c in rows)
        return found
