"""Staff members and their login sessions."""

from __future__ import annotations

from sqlalchemy import select

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
