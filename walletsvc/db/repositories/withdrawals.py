"""Withdrawals (payout requests) and the idempotency keys that deduplicate them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select

from walletsvc.db.models import IdempotencyKey, Withdrawal
from walletsvc.db.repositories.base import Repository
from walletsvc.domain.withdrawal import WithdrawalStatus

# Requests accepted but not yet signed: they hold funds of the wallet.
_AWAITING = [WithdrawalStatus.PENDING_APPROVAL.value, WithdrawalStatus.APPROVED.value]


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

    def with_status(self, status: str) -> list[Withdrawal]:
        return list(self.session.scalars(select(Withdrawal).where(Withdrawal.status == status)))

    def page(
        self,
        *,
        status: str | None,
        wallet_id: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Withdrawal]:
        """Newest first, ``limit`` rows older than ``before`` (a row's created_at and id)."""
        query = select(Withdrawal)
        if status is not None:
            query = query.where(Withdrawal.status == status)
        if wallet_id is not None:
            query = query.where(Withdrawal.wallet_id == wallet_id)
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


class IdempotencyKeyRepository(Repository[IdempotencyKey]):
    model = IdempotencyKey

    def by_token_and_key(self, token_id: str, key: str) -> IdempotencyKey | None:
        return self.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.token_id == token_id, IdempotencyKey.key == key
            )
        )
