"""Proposed policy changes (ratchet, quorum, time lock, veto)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from walletsvc.db.models_governance import PolicyProposal
from walletsvc.db.repositories.base import Repository


class PolicyProposalRepository(Repository[PolicyProposal]):
    model = PolicyProposal

    def any_matching(self, *conditions: Any) -> bool:
        return (
            self.session.scalar(select(PolicyProposal.id).where(*conditions).limit(1)) is not None
        )

    def matching_by_effective_time(self, *conditions: Any) -> list[PolicyProposal]:
        return list(
            self.session.scalars(
                select(PolicyProposal).where(*conditions).order_by(PolicyProposal.effective_at)
            )
        )

    def newest(self, *, status: str | None, limit: int) -> list[PolicyProposal]:
        query = select(PolicyProposal)
        if status is not None:
            query = query.where(PolicyProposal.status == status)
        return list(
            self.session.scalars(query.order_by(PolicyProposal.created_at.desc()).limit(limit))
        )
