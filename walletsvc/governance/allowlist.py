"""The allowlist: destinations a wallet may pay, each MAC-tagged.

Two sources:
  * treasury destinations, proposed by staff: always need the governance ``allowlist_add``
    quorum, then the policy's cooling-off;
  * miner payout addresses, proposed by the payout engine (token scope ``allowlist:propose``):
    if the policy makes the allowlist *required*, they need the same quorum (otherwise a
    stolen token could list an attacker's address and, after the cooling-off, defeat the
    requirement); if it is not required, they are accepted at once and become usable after
    the cooling-off, with the trust ramp applying from then.
Removal is immediate (it only tightens) and audited.

The signer keeps its own copy (walletsvc.signer.governed): an entry approved by the quorum
reaches it first, with the approved content, and is active here only once the signer took
it (its cooling-off runs from then, on its clock); a removal reaches it first too. Entries
accepted without a quorum (payout addresses while the list is not required) stay the
service's: with the list not required the signer pays unlisted destinations anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from walletsvc.db.database import Database
from walletsvc.db.models_governance import AllowlistEntryRow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import allowlist_entry_message
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.signer_gate import send_governed
from walletsvc.governance.staff import now_utc
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.engine import AllowlistEntry
from walletsvc.wallets.service import get_wallet

KIND = "allowlist_add"
LIVE_STATUSES = ("pending", "active")
MAX_LABEL_LENGTH = 200


# staff_id None: an API token (the payout engine)
Proposer = approvals.Requester


def _tag(tags: RowTagger, e: AllowlistEntryRow) -> None:
    e.mac = tags.tag(allowlist_entry_message(e))


def _verify(tags: RowTagger, e: AllowlistEntryRow) -> None:
    if not tags.verify(allowlist_entry_message(e), e.mac):
        raise IntegrityFailure(f"allowlist entry {e.id} fails its integrity check")


def propose_entry(
    db: Database,
    tags: RowTagger,
    *,
    wallet: str,
    address: str,
    label: str | None,
    proposer: Proposer,
    now: datetime | None = None,
) -> str:
    if label is not None and len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"label is longer than {MAX_LABEL_LENGTH} characters", field="label")
    moment = now_utc(now)
    with db.write() as uow:
        w = get_wallet(uow, wallet)
        destination = decode_address(address, Network(w.network), field="address")
        if _live_entry(uow, w.id, destination.address) is not None:
            raise Conflict("this address is on the allowlist already", field="address")
        policy = active_policy(uow, tags, w).document
        needs_quorum = proposer.staff_id is not None or (
            policy.allowlist is not None and policy.allowlist.required
        )
        entry = AllowlistEntryRow(
            wallet_id=w.id,
            address=destination.address,
            label=label,
            source="payout" if proposer.staff_id is None else "treasury",
            status="pending" if needs_quorum else "active",
            active_since=None if needs_quorum else moment,
            proposed_by=proposer.actor,
            created_at=moment,
            mac="",
        )
        approvals.governed_action(
            uow,
            tags,
            entry,
            store=uow.allowlist,
            kind=KIND,
            approvers=Approvers.from_policy(policy, "allowlist_add", moment)
            if needs_quorum
            else None,
            requester=proposer,
            now=moment,
            event="allowlist.proposed",
            subject_type="allowlist_entry",
            details=lambda: {**_content(uow, entry), "status": entry.status},
        )
        _tag(tags, entry)
        return entry.id


def remove_entry(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    entry_id: str,
    actor: str,
    now: datetime | None = None,
) -> None:
    moment = now_utc(now)
    with db.write() as uow:
        entry = get_entry(uow, entry_id)
        if entry.status == "removed":
            return
        if entry.status in LIVE_STATUSES:
            # Tightening: the signer drops its copy at once, first (an unreachable signer
            # raises and nothing changes here). Pending too: the signer may hold it if the
            # service stopped between handing it over and its commit.
            wallet = uow.wallets.get(entry.wallet_id)
            removal = {
                "kind": "allowlist_remove",
                "entry_id": entry.id,
                "wallet": wallet.name if wallet is not None else entry.wallet_id,
                "address": entry.address,
            }
            signer.apply_governed("allowlist_remove", removal)
        approvals.cancel_for_subject(uow, actor=actor, now=moment, kind=KIND, subject_id=entry.id)
        entry.status, entry.removed_at = "removed", moment
        _tag(tags, entry)
        uow.audit(actor, "allowlist.removed", "allowlist_entry", entry.id, _content(uow, entry))


def get_entry(uow: ReadUnitOfWork, entry_id: str) -> AllowlistEntryRow:
    row = uow.allowlist.get(entry_id)
    if row is None:
        raise NotFound("no such allowlist entry", field="id")
    return row


def _live_entry(uow: ReadUnitOfWork, wallet_id: str, address: str) -> AllowlistEntryRow | None:
    return uow.allowlist.newest_for_address(wallet_id, address, LIVE_STATUSES)


def entry_for_destination(
    uow: ReadUnitOfWork, tags: RowTagger, wallet_id: str, address: str
) -> AllowlistEntry | None:
    """The policy engine's view of one destination (None: not on the list). Fails closed on a
    row whose tag does not verify."""
    row = _live_entry(uow, wallet_id, address)
    return None if row is None else _engine_view(tags, row)


def _engine_view(tags: RowTagger, row: AllowlistEntryRow) -> AllowlistEntry:
    _verify(tags, row)
    status: Any = "active" if row.status == "active" else "pending"
    return AllowlistEntry(address=row.address, active_since=row.active_since, status=status)


def entries_for_destinations(
    uow: ReadUnitOfWork, tags: RowTagger, wallet_id: str, addresses: Sequence[str]
) -> dict[str, AllowlistEntry]:
    """``entry_for_destination`` for many destinations at once (absent: not on the list)."""
    rows = uow.allowlist.newest_for_addresses(wallet_id, addresses, LIVE_STATUSES)
    return {address: _engine_view(tags, row) for address, row in rows.items()}


def list_entries(uow: ReadUnitOfWork, *, wallet: str | None, include_removed: bool) -> list[Any]:
    return uow.allowlist.with_wallet_names(
        wallet_id=get_wallet(uow, wallet).id if wallet is not None else None,
        statuses=None if include_removed else LIVE_STATUSES,
    )


def entry_view(
    uow: ReadUnitOfWork, tags: RowTagger, entry: AllowlistEntryRow, wallet_name: str
) -> dict[str, Any]:
    request = approvals.request_for_subject(uow, KIND, entry.id)
    policy = active_policy(uow, tags, uow.wallets.get(entry.wallet_id)).document
    usable_from = None
    if entry.status == "active" and entry.active_since is not None:
        cooling = policy.allowlist.cooling_off if policy.allowlist is not None else 0
        usable_from = (entry.active_since + timedelta(seconds=cooling)).isoformat()
    return {
        "id": entry.id,
        "wallet": wallet_name,
        "address": entry.address,
        "label": entry.label,
        "source": entry.source,
        "status": entry.status,
        "proposed_by": entry.proposed_by,
        "created_at": entry.created_at.isoformat(),
        "active_since": entry.active_since.isoformat() if entry.active_since else None,
        "usable_from": usable_from,
        "removed_at": entry.removed_at.isoformat() if entry.removed_at else None,
        "approval_request_id": request.id if request else None,
        "integrity_ok": tags.verify(allowlist_entry_message(entry), entry.mac),
    }


def _content(uow: ReadUnitOfWork, entry: AllowlistEntryRow) -> dict[str, Any]:
    # The wallet's name too: the signer knows wallets by name (the sign path's).
    wallet = uow.wallets.get(entry.wallet_id)
    return {
        "kind": KIND,
        "entry_id": entry.id,
        "wallet_id": entry.wallet_id,
        "wallet": wallet.name if wallet is not None else None,
        "address": entry.address,
        "label": entry.label,
        "source": entry.source,
    }


class AllowlistApprovals:
    """An allowlist entry waiting for the governance quorum."""

    name = KIND

    def __init__(self, signer: SignerPort) -> None:
        self.signer = signer

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(uow, get_entry(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "active")

    def on_rejected(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "rejected")

    def on_expired(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "expired")

    def _settle(self, ctx: KindContext, request: Any, status: str) -> None:
        entry = get_entry(ctx.uow, request.subject_id)
        _verify(ctx.tags, entry)
        if entry.status != "pending":
            return
        if status == "active":
            sent = send_governed(
                ctx.uow,
                self.signer,
                actor=ctx.actor,
                kind=KIND,
                content=_content(ctx.uow, entry),
                subject=("allowlist_entry", entry.id),
            )
            if sent is None:
                return  # refused by the signer (audited): the entry stays pending
        entry.status = status
        if status == "active":
            entry.active_since = ctx.now  # the cooling-off starts now
        _tag(ctx.tags, entry)
        ctx.uow.audit(
            ctx.actor, f"allowlist.{status}", "allowlist_entry", entry.id, _content(ctx.uow, entry)
        )


# --- Read use cases --------------------------------------------------------------------------


def show_entry(db: Database, tags: RowTagger, entry_id: str) -> dict[str, Any]:
    with db.read() as uow:
        entry = get_entry(uow, entry_id)
        wallet = uow.wallets.get(entry.wallet_id)
        return entry_view(uow, tags, entry, wallet.name if wallet else "")


def list_allowlist(
    db: Database, tags: RowTagger, *, wallet: str | None, include_removed: bool
) -> dict[str, Any]:
    with db.read() as uow:
        rows = list_entries(uow, wallet=wallet, include_removed=include_removed)
        return {"entries": [entry_view(uow, tags, e, n) for e, n in rows]}
