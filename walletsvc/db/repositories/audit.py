"""The hash-chained audit log (appended only through ``UnitOfWork.audit``)."""

from __future__ import annotations

from sqlalchemy import select

from walletsvc.db.models import AuditEvent
from walletsvc.db.repositories.base import Repository


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

    def last_seq(self) -> int | None:
        return self.session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
