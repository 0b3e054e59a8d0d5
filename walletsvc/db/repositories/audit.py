"""The hash-chained audit log (appended only through ``UnitOfWork.audit``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from walletsvc.db.models import AuditEvent, AuditHead
from walletsvc.db.repositories.base import Repository
from walletsvc.db.tags import GovernedRowKind


class AuditEventRepository(Repository[AuditEvent]):
    model = AuditEvent

    def after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        """Events with a sequence number above ``seq``, in order."""
        return list(
            self.session.scalars(
                select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq).limit(limit)
            )
        )

    def from_seq(self, seq: int, *, limit: int) -> list[AuditEvent]:
        return self.after(seq - 1, limit=limit)

    def with_action_after(self, action: str, seq: int) -> list[AuditEvent]:
        return list(
            self.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == action, AuditEvent.seq > seq)
                .order_by(AuditEvent.seq)
            )
        )

    def with_actions_since(self, actions: Sequence[str], since: datetime) -> list[AuditEvent]:
        return list(
            self.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.in_(list(actions)), AuditEvent.created_at >= since)
                .order_by(AuditEvent.seq)
            )
        )

    def latest(self, action: str, subject_id: str) -> AuditEvent | None:
        """The newest event of ``action`` about ``subject_id`` (rare actions: the action index
        narrows the search)."""
        return self.session.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == action, AuditEvent.subject_id == subject_id)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )

    def head(self) -> AuditHead | None:
        """The chain's head row: the last sequence number and hash."""
        return self.session.get(AuditHead, 1)

    def governed_rows(self, kind: GovernedRowKind) -> list[Any]:
        """Every row of one governed kind whose tag must hold (``audit verify`` walks them)."""
        query = select(kind.model)
        if kind.only is not None:
            query = query.where(kind.only)
        return list(self.session.scalars(query))
