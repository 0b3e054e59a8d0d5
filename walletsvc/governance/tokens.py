"""API tokens for machine clients: random, shown once, stored as SHA-256, scoped."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from walletsvc.db.database import Database
from walletsvc.db.models import ApiToken, utcnow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.repositories.tokens import TokenRecord, token_record_by_hash
from walletsvc.db.tags import api_token_message
from walletsvc.domain.access import SCOPES
from walletsvc.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from walletsvc.keys.integrity import RowTagger
from walletsvc.tls import normalize_fingerprint

TOKEN_PREFIX = "wsvc_"  # noqa: S105  (a public prefix, not a secret)


@dataclass(frozen=True)
class TokenPrincipal:
    token_id: str
    name: str
    scopes: frozenset[str]
    # Set when the token is bound to a client certificate (SHA-256 hex): the API refuses it
    # on a connection without that certificate.
    cert_fingerprint: str | None = None

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
    cert_fingerprint: str | None = None


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    db: Database,
    tags: RowTagger,
    *,
    name: str,
    scopes: list[str],
    actor: str,
    cert_fingerprint: str | None = None,
) -> CreatedToken:
    """A new token; with ``cert_fingerprint`` (SHA-256 of a client certificate, hex, colons
    allowed) it is accepted only over a connection presenting that certificate."""
    unknown = sorted(set(scopes) - SCOPES)
    if unknown or not scopes:
        raise InvalidInput(
            f"unknown or missing scopes {unknown}; choose from {sorted(SCOPES)}", field="scope"
        )
    bound = None
    if cert_fingerprint is not None:
        try:
            bound = normalize_fingerprint(cert_fingerprint)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="cert_fingerprint") from None
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as uow:
        row = ApiToken(
            name=name,
            token_hash=hash_token(secret),
            scopes=sorted(set(scopes)),
            cert_fingerprint=bound,
        )
        uow.tokens.add(row, flush=True)
        row.mac = tags.tag(api_token_message(row))
        uow.audit(
            actor,
            "token.created",
            "api_token",
            row.id,
            {"name": name, "scopes": row.scopes, "cert_fingerprint": bound},
        )
    return CreatedToken(row.id, name, list(row.scopes), secret, bound)


def revoke_token(db: Database, tags: RowTagger, *, token_id: str, actor: str) -> None:
    with db.write() as uow:
        row = uow.tokens.get(token_id)
        if row is None:
            raise NotFound("no such token", field="token_id")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            row.mac = tags.tag(api_token_message(row))
            uow.audit(actor, "token.revoked", "api_token", row.id, {"name": row.name})


def list_tokens(uow: ReadUnitOfWork) -> list[ApiToken]:
    return uow.tokens.all_by_creation()


def authenticate_token(uow: ReadUnitOfWork, tags: RowTagger, secret: str) -> TokenPrincipal:
    """The principal of a valid, unrevoked API token whose tag verifies.

    Raises ``Unauthenticated`` for an unknown or revoked token and ``ForgedToken`` (also a
    401) for a row whose tag fails: inserted, widened or un-revoked in the database."""
    return _principal_of(uow.tokens.by_hash(hash_token(secret)), tags)


def _principal_of(row: ApiToken | TokenRecord | None, tags: RowTagger) -> TokenPrincipal:
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API token")
    if not tags.verify(api_token_message(row), row.mac or ""):
        raise ForgedToken(row.id)
    return TokenPrincipal(row.id, row.name, frozenset(row.scopes), row.cert_fingerprint)


class ForgedToken(Unauthenticated):
    """A token row that fails its tag. The caller sees the same 401 as for any bad token."""

    def __init__(self, token_id: str) -> None:
        super().__init__("invalid or revoked API token")
        self.token_id = token_id


def authenticate_api_token(db: Database, tags: RowTagger, secret: str) -> TokenPrincipal:
    """The principal of a valid, unrevoked, genuine API token; 401 otherwise. A forged row is
    audited as an integrity failure (its own committed transaction) before the 401."""
    try:
        with db.lookup() as connection:
            record = token_record_by_hash(connection, hash_token(secret))
        return _principal_of(record, tags)
    except ForgedToken as forged:
        with db.write() as uow:
            uow.audit(
                "system",
                "integrity.failure",
                "api_token",
                forged.token_id,
                {"reason": f"API token {forged.token_id} fails its integrity tag"},
            )
        raise
