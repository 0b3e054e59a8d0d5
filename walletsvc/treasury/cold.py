"""Cold destinations: where sweeps go, set at init and changed only through an approval quorum.

The row holding a wallet's active destination is MAC-tagged with a key derived from the KEK
(outside the database) and re-parsed before every use, so neither a database edit nor a bug
elsewhere can make a sweep pay an address the treasury did not approve. A change is a request
(``ColdDestinationChange``) governed by the policy's ``cold_destination_change`` quorum through
the one approval mechanism (walletsvc.governance.approvals); ``apply_cold_destination_change``
is what runs when the quorum is met.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import Wallet, utcnow
from walletsvc.db.models_treasury import ColdDestinationChange, ColdDestinationRow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import cold_destination_message
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.signer_gate import send_governed
from walletsvc.governance.staff import now_utc
from walletsvc.keys.descriptor import ColdDestination, parse_cold_destination
from walletsvc.keys.errors import InvalidXpub
from walletsvc.keys.integrity import RowTagger
from walletsvc.wallets.service import get_wallet

log = logging.getLogger(__name__)
KIND: Final = "cold_destination_change"
ACTIVE = "active"
PENDING = "pending_approval"
MAX_REASON_LENGTH = 500


class NoColdDestination(Conflict):
    """The wallet has no cold destination, so nothing can be swept."""

    code = "no_cold_destination"


@dataclass(frozen=True)
class ColdAddress:
    destination_id: str
    fingerprint: str
    index: int
    script_pubkey: bytes
    address: str


def _tag(tags: RowTagger, row: ColdDestinationRow) -> None:
    row.mac = tags.tag(cold_destination_message(row))


def _parse(text: str, wallet: Wallet) -> ColdDestination:
    return parse_cold_destination(text, Network(wallet.network))


def _active_row(uow: ReadUnitOfWork, wallet_id: str) -> ColdDestinationRow | None:
    return uow.cold_destinations.active_of_wallet(wallet_id)


def _install(
    uow: UnitOfWork,
    tags: RowTagger,
    wallet: Wallet,
    parsed: ColdDestination,
    *,
    actor: str,
    why: str,
) -> ColdDestinationRow:
    """Retire the active destination (if any) and make ``parsed`` the active one."""
    old = _active_row(uow, wallet.id)
    if old is not None:
        old.status, old.retired_at = "retired", utcnow()
        _tag(tags, old)
    row = ColdDestinationRow(
        wallet_id=wallet.id,
        kind=parsed.kind.value,
        descriptor=parsed.descriptor,
        fingerprint=parsed.fingerprint,
        next_index=0,
        status=ACTIVE,
        mac="",
    )
    uow.cold_destinations.add(row, flush=True)
    _tag(tags, row)
    uow.audit(
        actor,
        "cold_destination.set",
        "wallet",
        wallet.id,
        {
            "wallet": wallet.name,
            "kind": row.kind,
            "fingerprint": row.fingerprint,
            "descriptor": row.descriptor,  # public keys only: staff verify it against devices
            "previous_fingerprint": old.fingerprint if old is not None else None,
            "why": why,
        },
    )
    return row


def set_initial_cold_destination(
    db: Database, tags: RowTagger, *, wallet: str, text: str, actor: str
) -> ColdDestination:
    """At ``walletsvc init`` only: a wallet with a destination changes it through a quorum."""
    with db.write() as uow:
        row = get_wallet(uow, wallet)
        parsed = _parse(text, row)
        if _active_row(uow, row.id) is not None:
            raise Conflict(
                "this wallet has a cold destination already; changing it needs approvals",
                field="cold_destination",
            )
        _install(uow, tags, row, parsed, actor=actor, why="init")
        return parsed


def active_cold_destination(
    uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet
) -> tuple[ColdDestinationRow, ColdDestination] | None:
    """The verified active destination, or None if the wallet has none."""
    row = _active_row(uow, wallet.id)
    if row is None:
        return None
    if not tags.verify(cold_destination_message(row), row.mac):
        raise IntegrityFailure(f"the cold destination of wallet {wallet.name!r} was altered")
    parsed = _parse(row.descriptor, wallet)
    if parsed.descriptor != row.descriptor or parsed.fingerprint != row.fingerprint:
        raise IntegrityFailure(
            f"the cold destination of wallet {wallet.name!r} does not parse back"
        )
    return row, parsed


def reserve_cold_address(uow: UnitOfWork, tags: RowTagger, wallet: Wallet) -> ColdAddress:
    """The next unused cold address; the index advances in the caller's transaction."""
    found = active_cold_destination(uow, tags, wallet)
    if found is None:
        raise NoColdDestination(
            f"wallet {wallet.name!r} has no cold destination (set one at `walletsvc init`)",
            field="wallet",
        )
    row, parsed = found
    index = row.next_index
    row.next_index = index + 1
    return ColdAddress(
        row.id, row.fingerprint, index, parsed.script_pubkey(index), parsed.address(index)
    )


# Cold addresses watched past the last one a sweep reserved: deposits made straight to cold
# storage (from a hardware wallet's own receive screen) are usually among the first unused ones.
COLD_LOOKAHEAD = 20


@dataclass(frozen=True)
class WatchedColdAddress:
    wallet_id: str
    destination_id: str
    index: int


def watched_cold_scripts(uow: ReadUnitOfWork) -> dict[str, WatchedColdAddress]:
    """Every cold address to watch (scriptPubKey hex): of every destination a wallet has had,
    retired ones included (their coins are still the treasury's), up to ``COLD_LOOKAHEAD``
    past the next unused index. Watch-only: derived from the public descriptor."""
    found: dict[str, WatchedColdAddress] = {}
    for row in uow.cold_destinations.all():
        wallet = uow.wallets.get(row.wallet_id)
        if wallet is None:
            continue
        try:
            parsed = _parse(row.descriptor, wallet)
        except InvalidXpub:
            # Altered behind our back: refills refuse it by its tag; watching skips it.
            log.error("cold destination %s does not parse; not watched", row.id)
            continue
        for index in range(row.next_index + COLD_LOOKAHEAD):
            found[parsed.script_pubkey(index).hex()] = WatchedColdAddress(wallet.id, row.id, index)
    return found


def verified_cold_destination(
    uow: ReadUnitOfWork, tags: RowTagger, row: ColdDestinationRow, wallet: Wallet
) -> ColdDestination:
    """Any of the wallet's destinations (active or retired), its tag checked, parsed."""
    if row.wallet_id != wallet.id or not tags.verify(cold_destination_message(row), row.mac):
        raise IntegrityFailure(f"a cold destination of wallet {wallet.name!r} was altered")
    parsed = _parse(row.descriptor, wallet)
    if parsed.descriptor != row.descriptor or parsed.fingerprint != row.fingerprint:
        raise IntegrityFailure(f"a cold destination of wallet {wallet.name!r} does not parse back")
    return parsed


def treasury_view(uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet) -> dict[str, Any]:
    """The wallet view's treasury fields: cold destination fingerprint and hot thresholds."""
    try:
        hot = active_policy(uow, tags, wallet).document.hot
    except IntegrityFailure:
        hot = None  # the policy endpoints report the integrity failure; the view stays up
    return {
        "cold_destination": cold_view(uow, wallet),
        "hot_thresholds": hot.model_dump() if hot is not None else None,
    }


def cold_view(uow: ReadUnitOfWork, wallet: Wallet) -> dict[str, Any] | None:
    row = _active_row(uow, wallet.id)
    if row is None:
        return None
    return {"kind": row.kind, "fingerprint": row.fingerprint, "next_index": row.next_index}


# --- governed change ------------------------------------------------------------------------


def get_change(uow: ReadUnitOfWork, change_id: str) -> ColdDestinationChange:
    row = uow.cold_changes.get(change_id)
    if row is None:
        raise NotFound("no such cold destination change", field="id")
    return row


def _change_content(uow: ReadUnitOfWork, change: ColdDestinationChange) -> dict[str, Any]:
    wallet = uow.wallets.get(change.wallet_id)
    current = _active_row(uow, change.wallet_id)
    return {
        "kind": KIND,
        "change_id": change.id,
        "wallet": wallet.name if wallet is not None else change.wallet_id,
        "destination_kind": change.kind,
        "descriptor": change.descriptor,
        "fingerprint": change.fingerprint,
        "replaces_fingerprint": current.fingerprint if current is not None else None,
        "reason": change.reason,
    }


def request_cold_destination_change(
    db: Database,
    tags: RowTagger,
    *,
    wallet: str,
    text: str,
    reason: str | None,
    requester: str,
    requester_staff_id: str | None,
    now: datetime | None = None,
) -> ColdDestinationChange:
    """Open a change request and its approval request (quorum ``cold_destination_change``)."""
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"reason is longer than {MAX_REASON_LENGTH} characters", field="reason")
    moment = now_utc(now)
    with db.write() as uow:
        w = get_wallet(uow, wallet)
        parsed = _parse(text, w)
        current = _active_row(uow, w.id)
        if current is not None and current.fingerprint == parsed.fingerprint:
            raise Conflict("this is the current cold destination already", field="descriptor")
        change = ColdDestinationChange(
            wallet_id=w.id,
            kind=parsed.kind.value,
            descriptor=parsed.descriptor,
            fingerprint=parsed.fingerprint,
            reason=reason,
            status=PENDING,
            requested_by=requester,
            created_at=moment,
        )
        policy = active_policy(uow, tags, w).document
        approvals.governed_action(
            uow,
            tags,
            change,
            store=uow.cold_changes,
            kind=KIND,
            approvers=Approvers.from_policy(policy, KIND, moment),
            requester=Requester(requester, requester_staff_id),
            now=moment,
            event="cold_destination.change_requested",
            subject_type="cold_destination_change",
            details=lambda: _change_content(uow, change),
        )
        return change


def apply_cold_destination_change(
    uow: UnitOfWork, tags: RowTagger, change: ColdDestinationChange, *, actor: str
) -> ColdDestinationRow:
    """Make an approved change the wallet's active destination (the quorum's hook)."""
    if change.status != PENDING:
        raise Conflict(f"this change is {change.status}", field="id")
    wallet = uow.wallets.get(change.wallet_id)
    assert wallet is not None
    parsed = _parse(change.descriptor, wallet)
    if parsed.fingerprint != change.fingerprint:
        raise IntegrityFailure(f"cold destination change {change.id} does not parse back")
    row = _install(uow, tags, wallet, parsed, actor=actor, why=f"change {change.id}")
    change.status, change.decided_at = "applied", utcnow()
    return row


def change_view(change: ColdDestinationChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "kind": change.kind,
        "fingerprint": change.fingerprint,
        "descriptor": change.descriptor,
        "reason": change.reason,
        "status": change.status,
        "requested_by": change.requested_by,
        "approval_request_id": change.approval_request_id,
        "created_at": change.created_at.isoformat(),
        "decided_at": change.decided_at.isoformat() if change.decided_at else None,
    }


class ColdDestinationApprovals:
    """The approval kind: content to approve, and what each outcome does. At quorum the
    signer takes the new destination first (it counts the quorum itself); refused, the
    change stays pending here and the refusal is audited."""

    name = KIND

    def __init__(self, signer: SignerPort) -> None:
        self.signer = signer

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _change_content(uow, get_change(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: Any) -> None:
        change = get_change(ctx.uow, request.subject_id)
        if change.status != PENDING:
            return
        sent = send_governed(
            ctx.uow,
            self.signer,
            actor=ctx.actor,
            kind=KIND,
            content=_change_content(ctx.uow, change),
            subject=("cold_destination_change", change.id),
        )
        if sent is not None:
            apply_cold_destination_change(ctx.uow, ctx.tags, change, actor=ctx.actor)

    def on_rejected(self, ctx: KindContext, request: Any) -> None:
        self._close(ctx, request, "rejected")

    def on_expired(self, ctx: KindContext, request: Any) -> None:
        self._close(ctx, request, "expired")

    @staticmethod
    def _close(ctx: KindContext, request: Any, status: str) -> None:
        change = get_change(ctx.uow, request.subject_id)
        if change.status != PENDING:
            return
        change.status, change.decided_at = status, ctx.now
        ctx.uow.audit(
            ctx.actor,
            f"cold_destination.change_{status}",
            "cold_destination_change",
            change.id,
            {"fingerprint": change.fingerprint},
        )


# --- Read use cases --------------------------------------------------------------------------


def cold_destination_overview(db: Database, wallet: str) -> dict[str, Any]:
    """The wallet's cold destination and its 20 latest proposed changes."""
    with db.read() as uow:
        row = get_wallet(uow, wallet)
        changes = uow.cold_changes.newest_of_wallet(row.id, limit=20)
        return {
            "current": cold_view(uow, row),
            "changes": [change_view(c) for c in changes],
        }
