"""API tokens of machine clients (only the token's SHA-256 is stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from walletsvc.db.models import ApiToken
from walletsvc.db.repositories.base import Repository


class ApiTokenRepository(Repository[ApiToken]):
    model = ApiToken

    def by_hash(self, token_hash: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    def all_by_creation(self) -> list[ApiToken]:
        return list(self.session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


@dataclass(frozen=True)
class TokenRecord:
    """The fields of a token row that authentication and its tag need, read without the ORM."""

    id: str
    name: str
    token_hash: str
    scopes: list[Any]
    revoked_at: datetime | None
    cert_fingerprint: str | None
    mac: str | None


_TOKENS = ApiToken.__table__
# Built once: every API request runs it, and building and caching a SELECT through the ORM
# (a session, a transaction, an entity load) cost more than the query itself
# (docs/performance.md, "Authentication per request").
_RECORD_BY_HASH = select(
    _TOKENS.c.id,
    _TOKENS.c.name,
    _TOKENS.c.token_hash,
    _TOKENS.c.scopes,
    _TOKENS.c.revoked_at,
    _TOKENS.c.cert_fingerprint,
    _TOKENS.c.mac,
).where(_TOKENS.c.token_hash == bindparam("token_hash"))


def token_record_by_hash(connection: Connection, token_hash: str) -> TokenRecord | None:
    """The token with this hash, as committed now (one statement on a bare connection)."""
    row = connection.execute(_RECORD_BY_HASH, {"token_hash": token_hash}).first()
    return TokenRecord(*row) if row is not None else None
