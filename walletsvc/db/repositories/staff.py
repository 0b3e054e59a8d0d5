"""Staff members and their login sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from walletsvc.db.models_governance import Staff, StaffSession
from walletsvc.db.repositories.base import Repository


class StaffRepository(Repository[Staff]):
    model = Staff

    def by_username(self, username: str) -> Staff | None:
        return self.session.scalar(select(Staff).where(Staff.username == username))

    def all_by_username(self) -> list[Staff]:
        return list(self.session.scalars(select(Staff).order_by(Staff.username)))


class StaffSessionRepository(Repository[StaffSession]):
    model = StaffSession

    def by_token_hash(self, token_hash: str) -> StaffSession | None:
        return self.session.scalar(
            select(StaffSession).where(StaffSession.token_hash == token_hash)
        )

    def revoke_all_of(self, staff_id: str, now: datetime) -> int:
        """End every open session of a staff member; how many were open."""
        result = self.session.execute(
            update(StaffSession)
            .where(StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def revoke_others(self, staff_id: str, keep_session_id: str | None, now: datetime) -> int:
        """End every open session of a staff member but ``keep_session_id``; how many."""
        result = self.session.execute(
            update(StaffSession)
            .where(
                StaffSession.staff_id == staff_id,
                StaffSession.revoked_at.is_(None),
                StaffSession.id != (keep_session_id or ""),
            )
            .values(revoked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
