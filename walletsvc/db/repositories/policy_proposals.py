"""Proposed policy changes (ratchet, quorum, time lock, veto)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select

from walletsvc.db.models_governance import PolicyProposal
from walletsvc.db.repositories.base import Repository


class PolicyProposalRepository(Repository[PolicyProposal]):
    model = PolicyProposal

    def any_time_locked_due(self, moment: datetime) -> bool:
        return (
            self.session.scalar(select(PolicyProposal.id).where(*_due(moment)).limit(1)) is not None
        )

    def time_locked_due(self, moment: datetime) -> list[PolicyProposal]:
        """Time-locked proposals whose lock has run out by ``moment``, earliest first."""
        return list(
            self.session.scalars(
                select(PolicyProposal).where(*_due(moment)).order_by(PolicyProposal.effective_at)
            )
        )

    def newest(self, *, status: str | None, limit: int) -> list[PolicyProposal]:
        query = select(PolicyProposal)
        if status is not None:
            query = query.where(PolicyProposal.status == status)
        return list(
            self.session.scalars(query.order_by(PolicyProposal.created_at.desc()).limit(limit))
        )


def _due(moment: datetime) -> tuple[ColumnElement[bool], ...]:
    return (PolicyProposal.status == "time_locked", PolicyProposal.effective_at <= moment)
