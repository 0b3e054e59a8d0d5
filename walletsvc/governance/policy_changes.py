"""Policy changes: proposals, the ratchet, the quorum, the time lock and the veto.

* The ratchet (walletsvc.policy.ratchet.compare) says, rule by rule, whether the proposed
  document tightens or loosens the ACTIVE one; the proposal shows that assessment.
* Tightening only: one approver's word (m = 1 of the governance ``policy_change`` group)
  applies it at once.
* Loosening anything: the governance ``policy_change`` quorum of the ACTIVE policy, then the
  ACTIVE policy's ``policy_change_timelock``; during the lock any single approver of that
  group can veto. ``Runtime.tick`` applies proposals whose lock has run out, re-counting
  their approvals (MAC-verified) just before.
* A proposal is assessed against one base policy. If the active policy changes before the
  proposal applies, the assessment is stale: the proposal is marked ``superseded`` and must
  be proposed again (otherwise a loosening could silently undo a tightening made since).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import Wallet
from walletsvc.db.models_governance import ApprovalRequest, PolicyProposal
from walletsvc.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy, install_policy
from walletsvc.governance.staff import StaffPrincipal, check_totp, load_active_staff, now_utc
from walletsvc.keys.kek import Kek
from walletsvc.policy.document import (
    PolicyDocument,
    canonical_dict,
    load_policy_yaml,
    parse_policy,
    policy_hash,
)
from walletsvc.policy.ratchet import compare
from walletsvc.wallets.service import get_wallet

KIND = "policy_change"
MAX_DOCUMENT_BYTES = 256 * 1024


def parse_document(document: object) -> PolicyDocument:
    """A proposal carries the document as JSON (an object) or as YAML text."""
    if isinstance(document, str):
        if len(document.encode()) > MAX_DOCUMENT_BYTES:
            raise InvalidInput("the policy document is too large", field="document")
        return load_policy_yaml(document)
    if isinstance(document, dict):
        return parse_policy(document)
    raise InvalidInput("document must be a JSON object or a YAML string", field="document")


def propose(
    db: Database,
    kek: Kek,
    *,
    document: object,
    proposer: StaffPrincipal,
    now: datetime | None = None,
) -> str:
    new = parse_document(document)
    moment = now_utc(now)
    with db.write() as uow:
        wallet = get_wallet(uow.session, new.wallet) if new.wallet is not None else None
        active = active_policy(uow.session, kek, wallet)
        assessment = compare(active.document, new)
        if assessment.direction == "unchanged":
            raise Conflict("the proposed document equals the active policy", field="document")
        loosens = assessment.loosens
        proposal = PolicyProposal(
            wallet_id=wallet.id if wallet else None,
            document=canonical_dict(new),
            sha256=policy_hash(new),
            base_sha256=active.sha256,
            direction=assessment.direction,
            assessment=assessment.to_dict(),
            status="pending_approval",
            timelock_s=active.document.governance.policy_change_timelock if loosens else 0,
            proposed_by=proposer.actor,
            proposer_staff_id=proposer.staff_id,
            created_at=moment,
        )
        approvals.governed_action(
            uow,
            kek,
            proposal,
            kind=KIND,
            # Tightening: one approver's word. Loosening: the governance quorum.
            approvers=Approvers.from_policy(
                active.document, "policy_change", moment, m=None if loosens else 1
            ),
            requester=Requester(proposer.actor, proposer.staff_id),
            now=moment,
            event="policy.proposed",
            subject_type="policy_proposal",
            details=lambda: {
                "sha256": proposal.sha256,
                "base_sha256": proposal.base_sha256,
                "wallet": new.wallet,
                "assessment": assessment.to_dict(),
                "approval_request_id": proposal.approval_request_id,
                "timelock_s": proposal.timelock_s,
            },
        )
        return proposal.id


def get_proposal(session: Session, proposal_id: str) -> PolicyProposal:
    row = session.get(PolicyProposal, proposal_id)
    if row is None:
        raise NotFound("no such policy proposal", field="id")
    return row


def _content(p: PolicyProposal) -> dict[str, Any]:
    # The digest covers the exact document (by its hash), what it replaces and the direction.
    return {
        "kind": KIND,
        "proposal_id": p.id,
        "wallet_id": p.wallet_id,
        "sha256": p.sha256,
        "document_sha256": _document_hash(p),
        "base_sha256": p.base_sha256,
        "direction": p.direction,
        "timelock_s": p.timelock_s,
    }


def _document_hash(p: PolicyProposal) -> str:
    """The hash of the stored document as it is now (an edited row changes the digest)."""
    try:
        return policy_hash(parse_policy(p.document))
    except DomainError:
        return "invalid:" + json.dumps(p.document, sort_keys=True, default=str)[:64]


def _apply(ctx: KindContext, p: PolicyProposal, request: ApprovalRequest) -> None:
    """Install the proposal's document if its base is still the active policy."""
    session = ctx.uow.session
    wallet = session.get(Wallet, p.wallet_id) if p.wallet_id else None
    active = active_policy(session, ctx.kek, wallet)
    if active.sha256 != p.base_sha256:
        p.status = "superseded"
        ctx.uow.audit(
            ctx.actor,
            "policy.proposal_superseded",
            "policy_proposal",
            p.id,
            {"base_sha256": p.base_sha256, "active_sha256": active.sha256},
        )
        return
    counted = approvals.require_quorum(session, ctx.kek, request)
    document = parse_policy(p.document)
    if policy_hash(document) != p.sha256:
        raise IntegrityFailure(f"policy proposal {p.id} does not match its hash")
    install_policy(ctx.uow, ctx.kek, document, wallet_id=p.wallet_id, actor=ctx.actor)
    p.status, p.applied_at = "applied", ctx.now
    ctx.uow.audit(
        ctx.actor,
        "policy.proposal_applied",
        "policy_proposal",
        p.id,
        {
            "sha256": p.sha256,
            "direction": p.direction,
            "proposed_by": p.proposed_by,
            "approved_by": list(counted.approvers),
        },
    )


class PolicyChangeApprovals:
    name = KIND

    def content(self, session: Session, subject_id: str) -> dict[str, Any]:
        return _content(get_proposal(session, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        p = get_proposal(ctx.uow.session, request.subject_id)
        if p.direction == "tighten":
            _apply(ctx, p, request)
            return
        p.status = "time_locked"
        p.effective_at = ctx.now + timedelta(seconds=p.timelock_s)
        ctx.uow.audit(
            ctx.actor,
            "policy.time_locked",
            "policy_proposal",
            p.id,
            {"effective_at": p.effective_at, "sha256": p.sha256},
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_proposal(ctx.uow.session, request.subject_id).status = "rejected"

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_proposal(ctx.uow.session, request.subject_id).status = "expired"


def veto(
    db: Database,
    kek: Kek,
    settings: Settings,
    *,
    proposal_id: str,
    staff: StaffPrincipal,
    totp: str,
    comment: str | None,
    now: datetime | None = None,
) -> None:
    """Any single approver of the policy_change group stops a time-locked loosening."""
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        p = get_proposal(uow.session, proposal_id)
        request = approvals.get_request(uow.session, p.approval_request_id or "")
        row = load_active_staff(uow, kek, staff.staff_id)
        if row.role != "approver" or request.required_group not in row.groups:
            raise Forbidden(f"only approvers of group {request.required_group!r} can veto")
        if p.status != "time_locked":
            raise Conflict(f"only a time-locked proposal can be vetoed; this one is {p.status}")
        _step, error = check_totp(uow, kek, settings, row, totp, moment)
        if error is None:
            p.status, p.vetoed_by = "vetoed", staff.actor
            uow.audit(
                staff.actor,
                "policy.vetoed",
                "policy_proposal",
                p.id,
                {"sha256": p.sha256, "comment": comment},
            )
    if error is not None:
        raise error


def apply_due(db: Database, kek: Kek, *, now: datetime | None = None) -> int:
    """Apply time-locked proposals whose lock has run out (Runtime.tick). Returns how many."""
    moment = now_utc(now)
    applied = 0
    due_filter = (PolicyProposal.status == "time_locked", PolicyProposal.effective_at <= moment)
    with db.read() as session:  # most passes have nothing due: skip the write lock then
        if session.scalar(select(PolicyProposal.id).where(*due_filter).limit(1)) is None:
            return 0
    with db.write() as uow:
        due = list(
            uow.session.scalars(
                select(PolicyProposal).where(*due_filter).order_by(PolicyProposal.effective_at)
            )
        )
        for p in due:
            applied += _apply_one(uow, kek, p, moment)
    return applied


def _apply_one(uow: UnitOfWork, kek: Kek, p: PolicyProposal, now: datetime) -> int:
    ctx = KindContext(uow, kek, "system:policy-timelock", now)
    request = approvals.get_request(uow.session, p.approval_request_id or "")
    try:
        _apply(ctx, p, request)
    except IntegrityFailure as exc:
        # Fail closed: the change is not applied, and the reason is on the record.
        p.status = "failed"
        uow.audit(
            ctx.actor, "policy.proposal_failed", "policy_proposal", p.id, {"reason": exc.message}
        )
        return 0
    return 1 if p.status == "applied" else 0


def proposal_view(session: Session, p: PolicyProposal) -> dict[str, Any]:
    request = session.get(ApprovalRequest, p.approval_request_id) if p.approval_request_id else None
    wallet = session.get(Wallet, p.wallet_id) if p.wallet_id else None
    return {
        "id": p.id,
        "wallet": wallet.name if wallet else None,
        "status": p.status,
        "sha256": p.sha256,
        "base_sha256": p.base_sha256,
        "direction": p.direction,
        "assessment": p.assessment,
        "timelock_s": p.timelock_s,
        "proposed_by": p.proposed_by,
        "approval_request_id": p.approval_request_id,
        "approval_status": request.status if request else None,
        "required": {"group": request.required_group, "m": request.m} if request else None,
        "created_at": p.created_at.isoformat(),
        "effective_at": p.effective_at.isoformat() if p.effective_at else None,
        "applied_at": p.applied_at.isoformat() if p.applied_at else None,
        "vetoed_by": p.vetoed_by,
        "document": p.document,
    }


def list_proposals(session: Session, *, status: str | None, limit: int) -> list[PolicyProposal]:
    query = select(PolicyProposal)
    if status is not None:
        query = query.where(PolicyProposal.status == status)
    return list(session.scalars(query.order_by(PolicyProposal.created_at.desc()).limit(limit)))
