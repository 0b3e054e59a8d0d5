"""Staff passkeys and TOTP resets."""

from __future__ import annotations

from sqlalchemy import select

from walletsvc.db.models_staff_auth import StaffChange, StaffPasskey, StaffTotpReset
from walletsvc.db.repositories.base import Repository


class StaffPasskeyRepository(Repository[StaffPasskey]):
    model = StaffPasskey

    def by_credential_id(self, credential_id: str) -> StaffPasskey | None:
        return self.session.scalar(
            select(StaffPasskey).where(StaffPasskey.credential_id == credential_id)
        )

    def of_staff(self, staff_id: str) -> list[StaffPasskey]:
        return list(
            self.session.scalars(
                select(StaffPasskey)
                .where(StaffPasskey.staff_id == staff_id)
                .order_by(StaffPasskey.created_at, StaffPasskey.id)
            )
        )


class StaffTotpResetRepository(Repository[StaffTotpReset]):
    model = StaffTotpReset

    def newest(self, limit: int = 50) -> list[StaffTotpReset]:
        return list(
            self.session.scalars(
                select(StaffTotpReset)
                .order_by(StaffTotpReset.created_at.desc(), StaffTotpReset.id)
                .limit(limit)
            )
        )


class StaffChangeRepository(Repository[StaffChange]):
    model = StaffChange

    def open_for_username(self, username: str) -> StaffChange | None:
        """A change of ``username`` not yet applied, rejected or expired."""
        return self.session.scalar(
            select(StaffChange).where(
                StaffChange.username == username,
                StaffChange.status.in_(("pending_approval", "approved")),
            )
        )

    def newest(self, limit: int = 50) -> list[StaffChange]:
        return list(
            self.session.scalars(
                select(StaffChange)
                .order_by(StaffChange.created_at.desc(), StaffChange.id)
                .limit(limit)
            )
        )
