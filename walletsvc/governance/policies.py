"""The active policy lives in the database, versioned, hashed and MAC-tagged.

The MAC key is derived from the KEK (outside the database), so whoever can edit the database
cannot swap in a looser policy: a row whose tag does not verify is an integrity failure and
every payout is refused (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from walletsvc.db.database import UnitOfWork
from walletsvc.db.models import PolicyVersion, Wallet, utcnow
from walletsvc.db.tags import policy_message
from walletsvc.domain.errors import DomainError
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import PolicyDocument, canonical_json, parse_policy, policy_hash


class IntegrityFailure(DomainError):
    """A governed row does not match its MAC: the database was edited behind our back."""

    code = "integrity_failure"


@dataclass(frozen=True)
class ActivePolicy:
    document: PolicyDocument
    sha256: str
    version: int
    wallet_scoped: bool


def install_policy(
    uow: UnitOfWork, tags: RowTagger, document: PolicyDocument, *, wallet_id: str | None, actor: str
) -> PolicyVersion:
    """Make ``document`` the active policy (of a wallet, or the default), superseding the old."""
    session = uow.session
    current_version = session.scalar(
        select(func.max(PolicyVersion.version)).where(_scope(wallet_id))
    )
    for old in session.scalars(
        select(PolicyVersion).where(_scope(wallet_id), PolicyVersion.status == "active")
    ):
        old.status = "superseded"
        old.mac = tags.tag(policy_message(old))
    digest = policy_hash(document)
    row = PolicyVersion(
        wallet_id=wallet_id,
        version=(current_version or 0) + 1,
        document=_as_json_obj(document),
        sha256=digest,
        status="active",
        activated_at=utcnow(),
        mac="",
    )
    row.mac = tags.tag(policy_message(row))
    session.add(row)
    session.flush()
    uow.audit(
        actor,
        "policy.activated",
        "policy",
        row.id,
        {"version": row.version, "sha256": digest, "wallet_id": wallet_id},
    )
    return row


def active_policy(session: Session, tags: RowTagger, wallet: Wallet | None) -> ActivePolicy:
    row = None
    if wallet is not None:
        row = _active_row(session, wallet.id)
    wallet_scoped = row is not None
    if row is None:
        row = _active_row(session, None)
    if row is None:
        raise IntegrityFailure("no active policy: run `walletsvc init`")
    if not tags.verify(policy_message(row), row.mac):
        raise IntegrityFailure(f"policy version {row.version} fails its integrity check")
    document = parse_policy(row.document)
    if policy_hash(document) != row.sha256:
        raise IntegrityFailure(f"policy version {row.version} does not match its hash")
    return ActivePolicy(document, row.sha256, row.version, wallet_scoped)


def _active_row(session: Session, wallet_id: str | None) -> PolicyVersion | None:
    return session.scalar(
        select(PolicyVersion).where(_scope(wallet_id), PolicyVersion.status == "active")
    )


def _scope(wallet_id: str | None):  # type: ignore[no-untyped-def]
    if wallet_id is None:
        return PolicyVersion.wallet_id.is_(None)
    return PolicyVersion.wallet_id == wallet_id


def _as_json_obj(document: PolicyDocument) -> dict[str, object]:
    import json

    loaded: dict[str, object] = json.loads(canonical_json(document))
    return loaded
