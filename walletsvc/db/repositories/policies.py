"""Versions of the payout policy (global, or scoped to one wallet)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from walletsvc.db.models import PolicyVersion
from walletsvc.db.repositories.base import Repository


def _scope(wallet_id: str | None) -> Any:
    if wallet_id is None:
        return PolicyVersion.wallet_id.is_(None)
    return PolicyVersion.wallet_id == wallet_id


class PolicyVersionRepository(Repository[PolicyVersion]):
    model = PolicyVersion

    def latest_version(self, wallet_id: str | None) -> int | None:
        return self.session.scalar(select(func.max(PolicyVersion.version)).where(_scope(wallet_id)))

    def active(self, wallet_id: str | None) -> list[PolicyVersion]:
        """Active versions of the scope (one, unless the table was tampered with)."""
        return list(
            self.session.scalars(
                select(PolicyVersion).where(_scope(wallet_id), PolicyVersion.status == "active")
            )
        )

    def active_row(self, wallet_id: str | None) -> PolicyVersion | None:
        return self.session.scalar(
            select(PolicyVersion).where(_scope(wallet_id), PolicyVersion.status == "active")
        )

    def in_force_for(self, wallet_id: str) -> PolicyVersion | None:
        """``active_row(wallet_id)``, else ``active_row(None)`` (the default policy), in one
        statement: every intake transaction asks."""
        rows = self.session.scalars(
            select(PolicyVersion).where(
                (PolicyVersion.wallet_id == wallet_id) | PolicyVersion.wallet_id.is_(None),
                PolicyVersion.status == "active",
            )
        ).all()
        own = [row for row in rows if row.wallet_id == wallet_id]
        chosen = own or list(rows)
        return chosen[0] if chosen else None

    def any(self) -> bool:
        """Whether any policy was ever installed."""
        return self.session.scalar(select(PolicyVersion.id).limit(1)) is not None

    def all(self) -> list[PolicyVersion]:
        return list(self.session.scalars(select(PolicyVersion)))
