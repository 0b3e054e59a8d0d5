"""API tokens for machine clients: random, shown once, stored as SHA-256, scoped."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from walletsvc.db.database import Database
from walletsvc.db.models import ApiToken, utcnow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

SCOPES = frozenset(
    {
        "withdrawals:create",
        "withdrawals:read",
        "addresses:write",
        "addresses:read",
        "allowlist:propose",
        "freeze",
        "sweeps:write",
        "read",
    }
)
TOKEN_PREFIX = "wsvc_"  # noqa: S105  (a public prefix, not a secret)


@dataclass(frozen=True)
class TokenPrincipal:
    token_id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"token:{self.name}"

    def require(self, scope: str) -> None:
        # `read` is the read-everything scope for dashboards and monitoring.
        if scope in self.scopes or (scope.endswith(":read") and "read" in self.scopes):
            return
        raise Forbidden(f"this token lacks the '{scope}' scope")


@dataclass(frozen=True)
class CreatedToken:
    token_id: str
    name: str
    scopes: list[str]
    secret: str  # shown once, never stored


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(db: Database, *, name: str, scopes: list[str], actor: str) -> CreatedToken:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown or not scopes:
        raise InvalidInput(
            f"unknown or missing scopes {unknown}; choose from {sorted(SCOPES)}", field="scope"
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as uow:
        row = ApiToken(name=name, token_hash=hash_token(secret), scopes=sorted(set(scopes)))
        uow.tokens.add(row, flush=True)
        uow.audit(actor, "token.created", "api_token", row.id, {"name": name, "scopes": row.scopes})
    return CreatedToken(row.id, name, list(row.scopes), secret)


def revoke_token(db: Database, *, token_id: str, actor: str) -> None:
    with db.write() as uow:
        row = uow.tokens.get(token_id)
        if row is None:
            raise NotFound("no such token", field="token_id")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            uow.audit(actor, "token.revoked", "api_token", row.id, {"name": row.name})


def list_tokens(uow: ReadUnitOfWork) -> list[ApiToken]:
    return uow.tokens.all_by_creation()


def authenticate_token(uow: ReadUnitOfWork, secret: str) -> TokenPrincipal:
    row = uow.tokens.by_hash(hash_token(secret))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API token")
    return TokenPrincipal(row.id, row.name, frozenset(row.scopes))


def authenticate_api_token(db: Database, secret: str) -> TokenPrincipal:
    """The principal of a valid, unrevoked API token; 401 otherwise."""
    with db.read() as uow:
        return authenticate_token(uow, secret)
