"""Proposed policy changes (ratchet, quorum, time lock, veto)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select

from walletsvc.db.models_governance import PolicyProposal
from walletsvc.db.repositories.base import Repository


class PolicyProposalRepository(Repository[PolicyProposal]):
    model = PolicyProposal

    def any_time_locked_due(self, moment: datetime, height: int) -> bool:
        query = select(PolicyProposal.id).where(*_due(moment, height)).limit(1)
        return self.session.scalar(query) is not None

    def time_locked_due(self, moment: datetime, height: int) -> list[PolicyProposal]:
        """Time-locked proposals whose lock has run out by ``moment`` and block ``height``
        (both must have), earliest first."""
        return list(
            self.session.scalars(
                select(PolicyProposal)
                .where(*_due(moment, height))
                .order_by(PolicyProposal.effective_at)
            )
        )

    def newest(self, *, status: str | None, limit: int) -> list[PolicyProposal]:
        query = select(PolicyProposal)
        if status is not None:
            query = query.where(PolicyProposal.status == status)
        return list(
            self.session.scalars(query.order_by(PolicyProposal.created_at.desc()).limit(limit))
        )


def _due(moment: datetime, height: int) -> tuple[ColumnElement[bool], ...]:
    # A proposal without a block height (NULL) never compares true: it is never due.
    return (
        PolicyProposal.status == "time_locked",
        PolicyProposal.effective_at <= moment,
        PolicyProposal.effective_height <= height,
    )
