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
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from walletsvc.db.database import Database
from walletsvc.db.models import Wallet
from walletsvc.db.models_governance import AllowlistEntryRow
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.network import Network
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext
from walletsvc.governance.policies import ROW_MAC, IntegrityFailure, active_policy
from walletsvc.governance.staff import now_utc
from walletsvc.keys.kek import Kek
from walletsvc.policy.engine import AllowlistEntry
from walletsvc.wallets.service import get_wallet

KIND = "allowlist_add"
LIVE_STATUSES = ("pending", "active")
MAX_LABEL_LENGTH = 200


# staff_id None: an API token (the payout engine)
Proposer = approvals.Requester


def entry_mac_message(e: AllowlistEntryRow) -> bytes:
    since = e.active_since.isoformat() if e.active_since else "-"
    return f"allowlist|{e.id}|{e.wallet_id}|{e.address}|{e.source}|{e.status}|{since}".encode()


def _tag(kek: Kek, e: AllowlistEntryRow) -> None:
    e.mac = kek.mac(ROW_MAC, entry_mac_message(e))


def _verify(kek: Kek, e: AllowlistEntryRow) -> None:
    if not kek.verify_mac(ROW_MAC, entry_mac_message(e), e.mac):
        raise IntegrityFailure(f"allowlist entry {e.id} fails its integrity check")


def propose_entry(
    db: Database,
    kek: Kek,
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
        w = get_wallet(uow.session, wallet)
        destination = decode_address(address, Network(w.network), field="address")
        if _live_entry(uow.session, w.id, destination.address) is not None:
            raise Conflict("this address is on the allowlist already", field="address")
        policy = active_policy(uow.session, kek, w).document
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
            kek,
            entry,
            kind=KIND,
            approvers=Approvers.from_policy(policy, "allowlist_add", moment)
            if needs_quorum
            else None,
            requester=proposer,
            now=moment,
            event="allowlist.proposed",
            subject_type="allowlist_entry",
            details=lambda: {**_content(entry), "status": entry.status},
        )
        _tag(kek, entry)
        return entry.id


def remove_entry(
    db: Database, kek: Kek, *, entry_id: str, actor: str, now: datetime | None = None
) -> None:
    moment = now_utc(now)
    with db.write() as uow:
        entry = get_entry(uow.session, entry_id)
        if entry.status == "removed":
            return
        approvals.cancel_for_subject(uow, actor=actor, now=moment, kind=KIND, subject_id=entry.id)
        entry.status, entry.removed_at = "removed", moment
        _tag(kek, entry)
        uow.audit(actor, "allowlist.removed", "allowlist_entry", entry.id, _content(entry))


def get_entry(session: Session, entry_id: str) -> AllowlistEntryRow:
    row = session.get(AllowlistEntryRow, entry_id)
    if row is None:
        raise NotFound("no such allowlist entry", field="id")
    return row


def _live_entry(session: Session, wallet_id: str, address: str) -> AllowlistEntryRow | None:
    return session.scalar(
        select(AllowlistEntryRow)
        .where(
            AllowlistEntryRow.wallet_id == wallet_id,
            AllowlistEntryRow.address == address,
            AllowlistEntryRow.status.in_(LIVE_STATUSES),
        )
        .order_by(AllowlistEntryRow.created_at.desc())
        .limit(1)
    )


def entry_for_destination(
    session: Session, kek: Kek, wallet_id: str, address: str
) -> AllowlistEntry | None:
    """The policy engine's view of one destination (None: not on the list). Fails closed on a
    row whose tag does not verify."""
    row = _live_entry(session, wallet_id, address)
    if row is None:
        return None
    _verify(kek, row)
    status: Any = "active" if row.status == "active" else "pending"
    return AllowlistEntry(address=row.address, active_since=row.active_since, status=status)


def list_entries(session: Session, *, wallet: str | None, include_removed: bool) -> list[Any]:
    query = select(AllowlistEntryRow, Wallet.name).join(
        Wallet, Wallet.id == AllowlistEntryRow.wallet_id
    )
    if wallet is not None:
        query = query.where(AllowlistEntryRow.wallet_id == get_wallet(session, wallet).id)
    if not include_removed:
        query = query.where(AllowlistEntryRow.status.in_(LIVE_STATUSES))
    return list(session.execute(query.order_by(AllowlistEntryRow.created_at)).all())


def entry_view(
    session: Session, kek: Kek, entry: AllowlistEntryRow, wallet_name: str
) -> dict[str, Any]:
    request = approvals.request_for_subject(session, KIND, entry.id)
    policy = active_policy(session, kek, session.get(Wallet, entry.wallet_id)).document
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
        "integrity_ok": kek.verify_mac(ROW_MAC, entry_mac_message(entry), entry.mac),
    }


def _content(entry: AllowlistEntryRow) -> dict[str, Any]:
    return {
        "kind": KIND,
        "entry_id": entry.id,
        "wallet_id": entry.wallet_id,
        "address": entry.address,
        "label": entry.label,
        "source": entry.source,
    }


class AllowlistApprovals:
    """An allowlist entry waiting for the governance quorum."""

    name = KIND

    def content(self, session: Session, subject_id: str) -> dict[str, Any]:
        return _content(get_entry(session, subject_id))

    def on_approved(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "active")

    def on_rejected(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "rejected")

    def on_expired(self, ctx: KindContext, request: Any) -> None:
        self._settle(ctx, request, "expired")

    def _settle(self, ctx: KindContext, request: Any, status: str) -> None:
        entry = get_entry(ctx.uow.session, request.subject_id)
        _verify(ctx.kek, entry)
        if entry.status != "pending":
            return
        entry.status = status
        if status == "active":
            entry.active_since = ctx.now  # the cooling-off starts now
        _tag(ctx.kek, entry)
        ctx.uow.audit(
            ctx.actor, f"allowlist.{status}", "allowlist_entry", entry.id, _content(entry)
        )
