"""The active policy lives in the database, versioned, hashed and MAC-tagged.

The MAC key is derived from the KEK (outside the database), so whoever can edit the database
cannot swap in a looser policy: a row whose tag does not verify is an integrity failure and
every payout is refused (fail closed).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import PolicyVersion, Wallet, utcnow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import policy_message
from walletsvc.domain.errors import DomainError
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import (
    PolicyDocument,
    canonical_dict,
    canonical_json,
    parse_policy,
    policy_hash,
)
from walletsvc.wallets.service import get_wallet


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
    current_version = uow.policies.latest_version(wallet_id)
    for old in uow.policies.active(wallet_id):
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
    uow.policies.add(row, flush=True)
    uow.audit(
        actor,
        "policy.activated",
        "policy",
        row.id,
        {"version": row.version, "sha256": digest, "wallet_id": wallet_id},
    )
    return row


def active_policy(uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet | None) -> ActivePolicy:
    if wallet is not None:
        row = uow.policies.in_force_for(wallet.id)
        wallet_scoped = row is not None and row.wallet_id is not None
    else:
        row, wallet_scoped = _active_row(uow, None), False
    if row is None:
        raise IntegrityFailure("no active policy: run `walletsvc init`")
    if not tags.verify(policy_message(row), row.mac):
        raise IntegrityFailure(f"policy version {row.version} fails its integrity check")
    return ActivePolicy(_parsed_document(row), row.sha256, row.version, wallet_scoped)


class _ParsedPolicies:
    """Parsed policy documents by (version row id, stored hash), with the stored JSON they
    were parsed from.

    Parsing and hashing a document is a third of a decision's cost; comparing the row's JSON
    with the one a cached document was parsed (and hash-checked) from is a small fraction of
    that, so an edit of ``document`` behind our back still goes through the parse and fails
    its hash check. The row's tag is verified by the caller on every request regardless.
    """

    _LIMIT = 64  # versions in force at once: one global policy and a few wallet-scoped ones

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[Any, PolicyDocument]] = OrderedDict()

    def get(self, key: tuple[str, str], stored: Any) -> PolicyDocument | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != stored:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, str], stored: Any, document: PolicyDocument) -> None:
        with self._lock:
            self._entries[key] = (copy.deepcopy(stored), document)
            self._entries.move_to_end(key)
            while len(self._entries) > self._LIMIT:
                self._entries.popitem(last=False)


_parsed = _ParsedPolicies()


def _parsed_document(row: PolicyVersion) -> PolicyDocument:
    """The row's document, parsed once per version; a document not matching its hash fails."""
    key = (row.id, row.sha256)
    cached = _parsed.get(key, row.document)
    if cached is not None:
        return cached
    document = parse_policy(row.document)
    if policy_hash(document) != row.sha256:
        raise IntegrityFailure(f"policy version {row.version} does not match its hash")
    _parsed.put(key, row.document, document)
    return document


def _active_row(uow: ReadUnitOfWork, wallet_id: str | None) -> PolicyVersion | None:
    return uow.policies.active_row(wallet_id)


def _as_json_obj(document: PolicyDocument) -> dict[str, object]:
    import json

    loaded: dict[str, object] = json.loads(canonical_json(document))
    return loaded


# --- Read use cases --------------------------------------------------------------------------


def policy_view(db: Database, tags: RowTagger, wallet: str | None) -> dict[str, Any]:
    """The policy in force (the wallet's own, or the global one) as the API shows it."""
    with db.read() as uow:
        scoped = get_wallet(uow, wallet) if wallet is not None else None
        active = active_policy(uow, tags, scoped)
        return {
            "version": active.version,
            "sha256": active.sha256,
            "wallet_scoped": active.wallet_scoped,
            "rules": canonical_dict(active.document),
        }
