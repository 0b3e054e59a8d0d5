"""API tokens of machine clients (only the token's SHA-256 is stored)."""

from __future__ import annotations

from sqlalchemy import select

from walletsvc.db.models import ApiToken
from walletsvc.db.repositories.base import Repository


class ApiTokenRepository(Repository[ApiToken]):
    model = ApiToken

    def by_hash(self, token_hash: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    def all_by_creation(self) -> list[ApiToken]:
        return list(self.session.scalars(select(ApiToken).order_by(ApiToken.created_at)))
