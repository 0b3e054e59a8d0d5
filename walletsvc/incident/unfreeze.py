"""Lifting a freeze: a governed action (kind ``unfreeze``, quorum ``governance.unfreeze``).

Freezing is instant and open to anyone on call; unfreezing is the opposite. ``propose`` fixes
WHICH freezes a request lifts when it is opened (their ids are part of the approved content),
so a freeze applied after the request, e.g. by a risk rule during the review, is never lifted
by approvals given before it existed. The freezes lift in the approval's own transaction, so
the worker's next locked claim sees them gone, never half of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.models_incident import Freeze
from walletsvc.db.models_risk import UnfreezeRequest
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext
from walletsvc.governance.policies import active_policy
from walletsvc.governance.signer_gate import send_governed
from walletsvc.governance.staff import now_utc
from walletsvc.incident.freeze import (
    FREEZE_SCOPES,
    MAX_REASON_LENGTH,
    SIGNER_SCOPES,
    held_payouts,
    lift,
)
from walletsvc.keys.integrity import RowTagger
from walletsvc.wallets.freezes import active_freezes
from walletsvc.wallets.service import get_wallet

KIND = "unfreeze"
PENDING = "pending_approval"


Requester = approvals.Requester  # the name the API and the CLI import from here


@dataclass(frozen=True)
class Target:
    """Which freezes to lift: one by id, all of a (scope, wallet), or every active one."""

    freeze_id: str | None = None
    scope: str | None = None
    wallet: str | None = None


def propose(
    db: Database,
    tags: RowTagger,
    *,
    target: Target,
    reason: str,
    requester: Requester,
    now: datetime | None = None,
) -> UnfreezeRequest:
    """Open an unfreeze request for the freezes ``target`` names (none lifts yet)."""
    reason = _check_reason(reason)
    moment = now_utc(now)
    with db.write() as uow:
        freezes = _select_freezes(uow, target)
        approvers = _quorum(uow, tags, freezes, moment)
        row = UnfreezeRequest(
            freeze_ids=sorted(f.id for f in freezes),
            reason=reason,
            status=PENDING,
            requested_by=requester.actor,
            created_at=moment,
        )
        approvals.governed_action(
            uow,
            tags,
            row,
            store=uow.unfreeze_requests,
            kind=KIND,
            approvers=approvers,
            requester=requester,
            now=moment,
            event="unfreeze.proposed",
            subject_type="unfreeze_request",
            details=lambda: {
                "freeze_ids": row.freeze_ids,
                "reason": reason,
                "approval_request_id": row.approval_request_id,
                "required": {"group": approvers.group, "m": approvers.m},
            },
        )
        return row


def _check_reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"a reason (1-{MAX_REASON_LENGTH} characters) is required", field="reason"
        )
    return text


def _select_freezes(uow: ReadUnitOfWork, target: Target) -> list[Freeze]:
    if target.freeze_id is not None:
        row = uow.freezes.get(target.freeze_id)
        if row is None:
            raise NotFound("no such freeze", field="freeze_id")
        if row.lifted_at is not None:
            raise Conflict("this freeze has been lifted already", field="freeze_id")
        return [row]
    if target.scope is not None and target.scope not in FREEZE_SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(FREEZE_SCOPES)}", field="scope")
    wallet_id = get_wallet(uow, target.wallet).id if target.wallet else None
    rows = [
        f
        for f in active_freezes(uow)
        if (target.scope is None or f.scope == target.scope)
        and ((target.wallet is None and target.scope is None) or f.wallet_id == wallet_id)
    ]
    if not rows:
        raise Conflict("no active freeze matches", field="freeze_id")
    return rows


def _quorum(
    uow: ReadUnitOfWork, tags: RowTagger, freezes: list[Freeze], now: datetime
) -> Approvers:
    """The strictest governance.unfreeze quorum among the policies of the frozen wallets."""
    best: Approvers | None = None
    for wallet_id in sorted({f.wallet_id or "" for f in freezes}):
        wallet = uow.wallets.get(wallet_id) if wallet_id else None
        document = active_policy(uow, tags, wallet).document
        approvers = Approvers.from_policy(document, "unfreeze", now)
        if best is None or approvers.m > best.m:
            best = approvers
    assert best is not None
    return best


def get_unfreeze_request(uow: ReadUnitOfWork, request_id: str) -> UnfreezeRequest:
    row = uow.unfreeze_requests.get(request_id)
    if row is None:
        raise NotFound("no such unfreeze request", field="id")
    return row


def _lift_in_signer(
    ctx: KindContext, signer: SignerPort, row: UnfreezeRequest, lifting: list[Freeze]
) -> bool:
    """Ask the signer to lift its freeze of each wallet (or of all) that no other active
    freeze still stops, with the approved content: it counts the quorum itself. False when
    it refused (audited by send_governed)."""
    uow = ctx.uow
    ids = {f.id for f in lifting}
    still = {
        f.wallet_id
        for f in uow.freezes.active(None)
        if f.scope in SIGNER_SCOPES and f.id not in ids
    }
    names: list[str | None] = []
    for wallet_id in sorted({f.wallet_id for f in lifting if f.scope in SIGNER_SCOPES}, key=str):
        if wallet_id in still:
            continue
        wallet = uow.wallets.get(wallet_id) if wallet_id is not None else None
        names.append(wallet.name if wallet is not None else None)
    if not names:
        return True
    sent = send_governed(
        uow,
        signer,
        actor=ctx.actor,
        kind=KIND,
        content=_content(uow, row),
        payload={"wallets": names},
        subject=("unfreeze_request", row.id),
    )
    return sent is not None


def _content(uow: ReadUnitOfWork, row: UnfreezeRequest) -> dict[str, Any]:
    # Approvers approve lifting exactly these freezes, for this reason.
    # The held payouts are not part of it: cancelling one during the review would change the
    # content, which the approval mechanism treats as tampering. The request's view lists
    # them live instead (``unfreeze_view``).
    freezes = [uow.freezes.get(fid) for fid in row.freeze_ids]
    names = {f.wallet_id: _wallet_name(uow, f.wallet_id) for f in freezes if f is not None}
    return {
        "kind": KIND,
        "unfreeze_request_id": row.id,
        "reason": row.reason,
        "freezes": [
            {
                "id": f.id,
                "scope": f.scope,
                "wallet_id": f.wallet_id,
                "wallet": names[f.wallet_id],  # the signer knows wallets by name
                "reason": f.reason,
            }
            for f in freezes
            if f is not None
        ],
    }


def _wallet_name(uow: ReadUnitOfWork, wallet_id: str | None) -> str | None:
    wallet = uow.wallets.get(wallet_id) if wallet_id is not None else None
    if wallet_id is not None and wallet is None:
        return wallet_id  # no such wallet: the signer finds nothing frozen under this name
    return wallet.name if wallet is not None else None


class UnfreezeApprovals:
    """At quorum the freezes lift, and the signer's own freeze of the same wallets with them."""

    name = KIND

    def __init__(self, signer: SignerPort | None = None) -> None:
        self.signer = signer

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(uow, get_unfreeze_request(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        row = get_unfreeze_request(ctx.uow, request.subject_id)
        counted = approvals.require_quorum(ctx.uow, ctx.tags, request)
        if self.signer is not None:
            lifting = [f for f in (ctx.uow.freezes.get(i) for i in row.freeze_ids) if f]
            if not _lift_in_signer(ctx, self.signer, row, lifting):
                return  # the signer refused (audited): every freeze stays
        who = f"{row.requested_by}; approved by {', '.join(counted.approvers)}"
        for freeze_id in row.freeze_ids:
            lift(ctx.uow, freeze_id, lifted_by=who[:400])
        row.status, row.decided_at = "applied", ctx.now
        ctx.uow.audit(
            ctx.actor,
            "unfreeze.applied",
            "unfreeze_request",
            row.id,
            {
                "freeze_ids": row.freeze_ids,
                "reason": row.reason,
                "requested_by": row.requested_by,
                "approved_by": list(counted.approvers),
            },
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, request, "rejected", ctx.now)

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, request, "expired", ctx.now)


def _close(uow: UnitOfWork, request: ApprovalRequest, status: str, now: datetime) -> None:
    row = get_unfreeze_request(uow, request.subject_id)
    row.status, row.decided_at = status, now


def unfreeze_view(uow: ReadUnitOfWork, row: UnfreezeRequest) -> dict[str, Any]:
    freezes = [f for f in (uow.freezes.get(fid) for fid in row.freeze_ids) if f is not None]
    pending = row.status == PENDING
    return {
        # While the request waits: what its approval lets out (cancel any you do not want).
        "held_payouts": held_payouts(uow, [f for f in freezes if f.lifted_at is None])
        if pending
        else [],
        "id": row.id,
        "status": row.status,
        "freeze_ids": row.freeze_ids,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "approval_request_id": row.approval_request_id,
        "created_at": row.created_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
    }


def list_unfreeze_requests(uow: ReadUnitOfWork, *, limit: int = 50) -> list[UnfreezeRequest]:
    return uow.unfreeze_requests.newest(limit=limit)


# --- Read use cases --------------------------------------------------------------------------


def show_unfreeze(db: Database, tags: RowTagger, request_id: str) -> dict[str, Any]:
    """An unfreeze request with its approval request, when it has one."""
    with db.read() as uow:
        row = get_unfreeze_request(uow, request_id)
        view = unfreeze_view(uow, row)
        if row.approval_request_id:
            request = approvals.get_request(uow, row.approval_request_id)
            view["approval"] = approvals.request_view(uow, tags, request)
        return view


def unfreeze_index(db: Database) -> dict[str, Any]:
    with db.read() as uow:
        rows = list_unfreeze_requests(uow)
        return {"unfreeze_requests": [unfreeze_view(uow, r) for r in rows]}
