"""Allowlisted payout destinations."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from walletsvc.db.models import Wallet
from walletsvc.db.models_governance import AllowlistEntryRow
from walletsvc.db.repositories.base import Repository


class AllowlistRepository(Repository[AllowlistEntryRow]):
    model = AllowlistEntryRow

    def newest_for_address(
        self, wallet_id: str, address: str, statuses: Sequence[str]
    ) -> AllowlistEntryRow | None:
        return self.session.scalar(
            select(AllowlistEntryRow)
            .where(
                AllowlistEntryRow.wallet_id == wallet_id,
                AllowlistEntryRow.address == address,
                AllowlistEntryRow.status.in_(list(statuses)),
            )
            .order_by(AllowlistEntryRow.created_at.desc())
            .limit(1)
        )

    def newest_for_addresses(
        self, wallet_id: str, addresses: Sequence[str], statuses: Sequence[str]
    ) -> dict[str, AllowlistEntryRow]:
        """Address -> its newest entry in ``statuses``: ``newest_for_address`` for many
        addresses in one statement per thousand (a payout round's destinations)."""
        newest: dict[str, AllowlistEntryRow] = {}
        unique = sorted(set(addresses))
        for start in range(0, len(unique), 1_000):
            rows = self.session.scalars(
                select(AllowlistEntryRow)
                .where(
                    AllowlistEntryRow.wallet_id == wallet_id,
                    AllowlistEntryRow.address.in_(unique[start : start + 1_000]),
                    AllowlistEntryRow.status.in_(list(statuses)),
                )
                .order_by(AllowlistEntryRow.created_at)
            )
            for row in rows:
                newest[row.address] = row  # oldest first: the newest one stays
        return newest

    def with_wallet_names(
        self, *, wallet_id: str | None, statuses: Sequence[str] | None
    ) -> list[tuple[AllowlistEntryRow, str]]:
        """Entries (of one wallet, in ``statuses``; None means all), oldest first."""
        query = select(AllowlistEntryRow, Wallet.name).join(
            Wallet, Wallet.id == AllowlistEntryRow.wallet_id
        )
        if wallet_id is not None:
            query = query.where(AllowlistEntryRow.wallet_id == wallet_id)
        if statuses is not None:
            query = query.where(AllowlistEntryRow.status.in_(list(statuses)))
        rows = self.session.execute(query.order_by(AllowlistEntryRow.created_at)).all()
        return [(entry, name) for entry, name in rows]
