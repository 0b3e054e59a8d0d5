"""Policy changes: proposals, the ratchet, the quorum, the time lock and the veto.

* The ratchet (walletsvc.policy.ratchet.compare) says, rule by rule, whether the proposed
  document tightens or loosens the ACTIVE one; the proposal shows that assessment.
* Tightening only: one approver's word (m = 1 of the governance ``policy_change`` group)
  applies it at once.
* Loosening anything: the governance ``policy_change`` quorum of the ACTIVE policy, then the
  ACTIVE policy's ``policy_change_timelock``; during the lock any single approver of that
  group can veto. The lock is counted twice, on the host's clock and in blocks the scanner
  has seen (one per ten minutes: 48 h is 288 blocks), and ends when both have run out: a
  host whose clock is moved forward still waits for the chain. ``Runtime.tick`` applies
  proposals whose lock has run out, re-counting their approvals (MAC-verified) just before.
* A proposal is assessed against one base policy VERSION. If another version became active
  before the proposal applies (even one with the same document: A -> B -> A), the
  assessment is stale: the proposal is marked ``superseded`` and must be proposed again
  (otherwise a loosening could silently undo a tightening made since).
* The signer keeps its own copy (walletsvc.signer.governed): a proposal is installed here
  only after the signer took it, with the approved content and the document. The signer
  judges the direction itself, applies a tightening at once, and a loosening only with the
  quorum in its own ledger and its own time lock (its clock, from when it counted the
  quorum). A refusal is audited and the proposal ``failed``: nothing changes here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models_governance import ApprovalRequest, PolicyProposal
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import policy_time_lock_message
from walletsvc.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import (
    ActivePolicy,
    IntegrityFailure,
    active_policy,
    install_policy,
)
from walletsvc.governance.signer_gate import send_governed
from walletsvc.governance.staff import StaffPrincipal, check_totp, load_active_staff, now_utc
from walletsvc.keys.integrity import RowTagger, canonical_json
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
# The chain's target block interval: the time lock also waits ceil(lock / 10 min) blocks.
BLOCK_INTERVAL_S = 600


def timelock_blocks(timelock_s: int) -> int:
    """Blocks the time lock waits besides its duration (48 h: 288)."""
    return -(-timelock_s // BLOCK_INTERVAL_S)


def version_key(active: ActivePolicy) -> str:
    """Which stored version is active: per scope, versions only ever count up."""
    return f"{'wallet' if active.wallet_scoped else 'default'}/{active.version}"


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
    tags: RowTagger,
    *,
    document: object,
    proposer: StaffPrincipal,
    now: datetime | None = None,
) -> str:
    new = parse_document(document)
    moment = now_utc(now)
    with db.write() as uow:
        wallet = get_wallet(uow, new.wallet) if new.wallet is not None else None
        active = active_policy(uow, tags, wallet)
        assessment = compare(active.document, new)
        if assessment.direction == "unchanged":
            raise Conflict("the proposed document equals the active policy", field="document")
        loosens = assessment.loosens
        proposal = PolicyProposal(
            wallet_id=wallet.id if wallet else None,
            document=canonical_dict(new),
            sha256=policy_hash(new),
            base_sha256=active.sha256,
            base_version=version_key(active),
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
            tags,
            proposal,
            store=uow.policy_proposals,
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


def get_proposal(uow: ReadUnitOfWork, proposal_id: str) -> PolicyProposal:
    row = uow.policy_proposals.get(proposal_id)
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
        return "invalid:" + canonical_json(p.document).decode()[:64]


def _apply(
    ctx: KindContext, signer: SignerPort, p: PolicyProposal, request: ApprovalRequest
) -> None:
    """Install the proposal's document if its base is still the active policy."""
    wallet = ctx.uow.wallets.get(p.wallet_id) if p.wallet_id else None
    active = active_policy(ctx.uow, ctx.tags, wallet)
    if version_key(active) != p.base_version or active.sha256 != p.base_sha256:
        p.status = "superseded"
        ctx.uow.audit(
            ctx.actor,
            "policy.proposal_superseded",
            "policy_proposal",
            p.id,
            {
                "base_sha256": p.base_sha256,
                "active_sha256": active.sha256,
                "base_version": p.base_version,
                "active_version": version_key(active),
            },
        )
        return
    counted = approvals.require_quorum(ctx.uow, ctx.tags, request)
    document = parse_policy(p.document)
    if policy_hash(document) != p.sha256:
        raise IntegrityFailure(f"policy proposal {p.id} does not match its hash")
    sent = send_governed(
        ctx.uow,
        signer,
        actor=ctx.actor,
        kind=KIND,
        content=_content(p),
        payload=canonical_dict(document),
        subject=("policy_proposal", p.id),
    )
    if sent is None:
        p.status = "failed"  # the signer's refusal is on the record (signer_gate)
        return
    install_policy(ctx.uow, ctx.tags, document, wallet_id=p.wallet_id, actor=ctx.actor)
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

    def __init__(self, signer: SignerPort) -> None:
        self.signer = signer

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(get_proposal(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        p = get_proposal(ctx.uow, request.subject_id)
        if p.direction == "tighten":
            _apply(ctx, self.signer, p, request)
            return
        p.status = "time_locked"
        p.effective_at = ctx.now + timedelta(seconds=p.timelock_s)
        p.effective_height = ctx.uow.scanned_blocks.tip_height() + timelock_blocks(p.timelock_s)
        p.mac = ctx.tags.tag(policy_time_lock_message(p))
        ctx.uow.audit(
            ctx.actor,
            "policy.time_locked",
            "policy_proposal",
            p.id,
            {
                "effective_at": p.effective_at,
                "effective_height": p.effective_height,
                "sha256": p.sha256,
            },
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_proposal(ctx.uow, request.subject_id).status = "rejected"

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_proposal(ctx.uow, request.subject_id).status = "expired"


def veto(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
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
        p = get_proposal(uow, proposal_id)
        request = approvals.get_request(uow, p.approval_request_id or "")
        row = load_active_staff(uow, tags, staff.staff_id)
        if row.role != "approver" or request.required_group not in row.groups:
            raise Forbidden(f"only approvers of group {request.required_group!r} can veto")
        if p.status != "time_locked":
            raise Conflict(f"only a time-locked proposal can be vetoed; this one is {p.status}")
        _step, error = check_totp(uow, signer, settings, row, totp, moment)
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


def apply_due(
    db: Database, tags: RowTagger, signer: SignerPort, *, now: datetime | None = None
) -> int:
    """Apply time-locked proposals whose lock has run out (Runtime.tick). Returns how many."""
    moment = now_utc(now)
    applied = 0
    with db.read() as uow:  # most passes have nothing due: skip the write lock then
        if not uow.policy_proposals.any_time_locked_due(moment, uow.scanned_blocks.tip_height()):
            return 0
    with db.write() as uow:
        # Both locks must have run out; a proposal without a block height never is due.
        due = uow.policy_proposals.time_locked_due(moment, uow.scanned_blocks.tip_height())
        for p in due:
            applied += _apply_one(uow, tags, signer, p, moment)
    return applied


def _apply_one(
    uow: UnitOfWork, tags: RowTagger, signer: SignerPort, p: PolicyProposal, now: datetime
) -> int:
    ctx = KindContext(uow, tags, "system:policy-timelock", now)
    request = approvals.get_request(uow, p.approval_request_id or "")
    try:
        if not tags.verify(policy_time_lock_message(p), p.mac):
            raise IntegrityFailure(f"time-locked policy proposal {p.id} fails its integrity tag")
        _apply(ctx, signer, p, request)
    except IntegrityFailure as exc:
        # Fail closed: the change is not applied, and the reason is on the record.
        p.status = "failed"
        uow.audit(
            ctx.actor, "policy.proposal_failed", "policy_proposal", p.id, {"reason": exc.message}
        )
        return 0
    return 1 if p.status == "applied" else 0


def proposal_view(uow: ReadUnitOfWork, p: PolicyProposal) -> dict[str, Any]:
    request = uow.approval_requests.get(p.approval_request_id) if p.approval_request_id else None
    wallet = uow.wallets.get(p.wallet_id) if p.wallet_id else None
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
        "effective_height": p.effective_height,
        "applied_at": p.applied_at.isoformat() if p.applied_at else None,
        "vetoed_by": p.vetoed_by,
        "document": p.document,
    }


def list_proposals(uow: ReadUnitOfWork, *, status: str | None, limit: int) -> list[PolicyProposal]:
    return uow.policy_proposals.newest(status=status, limit=limit)


# --- Read use cases --------------------------------------------------------------------------


def show_proposal(db: Database, proposal_id: str) -> dict[str, Any]:
    with db.read() as uow:
        return proposal_view(uow, get_proposal(uow, proposal_id))


def proposals_index(db: Database, *, status: str | None, limit: int) -> dict[str, Any]:
    with db.read() as uow:
        rows = list_proposals(uow, status=status, limit=limit)
        return {"proposals": [proposal_view(uow, p) for p in rows]}
