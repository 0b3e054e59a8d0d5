"""One approval mechanism for every governed action.

An ``ApprovalRequest`` names a kind (withdrawal, allowlist_add, policy_change, ...), a subject,
the group and number m of approvers it needs, an expiry, its requester and the SHA-256 digest
of the canonical content it approves. Each kind registers an ``ApprovalKind``: how to build
that content from the subject, and what happens when the request is approved, rejected or
expires. Adding a governed action is: write the handler, register it in
walletsvc/bootstrap/approval_kinds.py.

Counting is strict and repeated from the rows every time (never from a cached counter):
  * a decision counts only if its digest equals the request's digest, which never changes:
    a subject whose content no longer matches it is an integrity failure, never re-bound;
  * its MAC (keyed from the KEK, outside the DB) verifies, as do the request's and the staff
    member's, so a database edit cannot forge a quorum;
  * the staff member is enabled, an approver, in the required group, not the requester;
  * one person counts once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from walletsvc.config import Settings
from walletsvc.db.database import INTEGRITY_FAILURE, Database, UnitOfWork
from walletsvc.db.models_governance import ApprovalDecision, ApprovalRequest, Staff
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.repositories.base import Repository
from walletsvc.db.tags import approval_decision_message, approval_request_message
from walletsvc.domain.errors import (
    AccountLocked,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    StepUpFailed,
)
from walletsvc.domain.ports import SignerPort
from walletsvc.governance.policies import IntegrityFailure
from walletsvc.governance.staff import (
    StaffPrincipal,
    accepted,
    ensure_not_locked,
    load_active_staff,
    now_utc,
    staff_is_genuine,
    step_up_failed,
)
from walletsvc.keys import passkeys as webauthn
from walletsvc.keys.integrity import RowTagger, content_digest
from walletsvc.keys.passkeys import RelyingParty
from walletsvc.policy.document import GovernedAction, PolicyDocument
from walletsvc.policy.engine import approval_deadline

Decision = Literal["approve", "reject"]
MAX_COMMENT_LENGTH = 500
PENDING = "pending"


@dataclass
class KindContext:
    """What a handler gets: the open write transaction, the row tagger, who acted, and when."""

    uow: UnitOfWork
    tags: RowTagger
    actor: str
    now: datetime


class ApprovalKind(Protocol):
    name: str

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        """The exact content approvers approve; its canonical JSON is hashed into the digest."""

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None: ...

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None: ...

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None: ...


_KINDS: dict[str, ApprovalKind] = {}


def register_kind(kind: ApprovalKind) -> ApprovalKind:
    """Make ``kind`` known; the composition root registers every kind once at start-up
    (walletsvc.bootstrap.approval_kinds), so this module imports none of them."""
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ApprovalKind:
    kind = _KINDS.get(name)
    if kind is None:
        raise IntegrityFailure(f"approval request of unknown kind {name!r}")
    return kind


# --- Digests and tags ------------------------------------------------------------------------


def _tag_request(tags: RowTagger, r: ApprovalRequest) -> None:
    r.mac = tags.tag(approval_request_message(r))


def verify_request(tags: RowTagger, r: ApprovalRequest) -> None:
    if not tags.verify(approval_request_message(r), r.mac):
        raise IntegrityFailure(f"approval request {r.id} fails its integrity check")


# --- Opening a request -----------------------------------------------------------------------


def open_request(
    uow: UnitOfWork,
    tags: RowTagger,
    *,
    kind: str,
    subject_id: str,
    group: str,
    m: int,
    expires_at: datetime,
    requester: str,
    requester_staff_id: str | None,
    now: datetime,
) -> ApprovalRequest:
    """Open a request inside the caller's transaction (the subject is created there too)."""
    content = get_kind(kind).content(uow, subject_id)
    request = ApprovalRequest(
        kind=kind,
        subject_id=subject_id,
        required_group=group,
        m=m,
        digest=content_digest(content),
        content=content,
        status=PENDING,
        requester=requester,
        requester_staff_id=requester_staff_id,
        created_at=now,
        expires_at=expires_at,
        mac="",
    )
    uow.approval_requests.add(request, flush=True)
    _tag_request(tags, request)
    uow.audit(
        requester,
        "approval.requested",
        "approval_request",
        request.id,
        {
            "kind": kind,
            "subject_id": subject_id,
            "required": {"group": group, "m": m},
            "digest": request.digest,
            "expires_at": expires_at,
        },
    )
    return request


@dataclass(frozen=True)
class Requester:
    """Who asks for a governed action."""

    actor: str
    staff_id: str | None  # None: an API token or the CLI; a staff member never approves
    # their own request


@dataclass(frozen=True)
class Approvers:
    """Who must approve a request (m members of ``group``) and by when."""

    group: str
    m: int
    expires_at: datetime

    @classmethod
    def from_policy(
        cls,
        document: PolicyDocument,
        action: GovernedAction,
        now: datetime,
        *,
        m: int | None = None,
    ) -> Approvers:
        """The policy's quorum for ``action`` (``m`` overrides its size) and its expiry."""
        quorum = document.quorum_for(action)
        return cls(quorum.group, quorum.m if m is None else m, approval_deadline(document, now))


class GovernedRow(Protocol):
    """A row an approval request governs (a proposal, a rotation, a change, an entry)."""

    @property
    def id(self) -> str: ...


def governed_action(
    uow: UnitOfWork,
    tags: RowTagger,
    row: GovernedRow,
    *,
    store: Repository[Any],
    kind: str,
    approvers: Approvers | None,
    requester: Requester,
    now: datetime,
    event: str,
    subject_type: str,
    details: Callable[[], dict[str, Any]],
) -> ApprovalRequest | None:
    """Create ``row`` (in ``store``, its repository) and open its approval request in the
    caller's transaction; audit both.

    ``approvers`` None: the action needs no approval (the row is created and audited alone).
    A row with an ``approval_request_id`` column is linked to its request before ``details``
    builds the ``event``'s data.
    """
    store.add(row, flush=True)
    request = None
    if approvers is not None:
        request = open_request(
            uow,
            tags,
            kind=kind,
            subject_id=row.id,
            group=approvers.group,
            m=approvers.m,
            expires_at=approvers.expires_at,
            requester=requester.actor,
            requester_staff_id=requester.staff_id,
            now=now,
        )
        if hasattr(row, "approval_request_id"):
            row.approval_request_id = request.id
    uow.audit(requester.actor, event, subject_type, row.id, details())
    return request


# --- Counting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    approvers: tuple[str, ...]  # usernames whose approvals count
    rejecters: tuple[str, ...]
    forged: tuple[str, ...] = ()  # ids of decisions that fail their tag (never counted)


def _eligible(tags: RowTagger, request: ApprovalRequest, staff: Staff | None) -> bool:
    return (
        staff is not None
        and staff.disabled_at is None
        and staff_is_genuine(tags, staff)
        and staff.role == "approver"
        and request.required_group in staff.groups
        and staff.id != request.requester_staff_id
    )


def excluded_staff(uow: ReadUnitOfWork, request: ApprovalRequest) -> frozenset[str]:
    """Staff ids who may not decide ``request`` besides its requester: a kind's own rule
    (``excluded_staff(uow, subject_id)``), e.g. the member whose authenticator is reset."""
    hook = getattr(get_kind(request.kind), "excluded_staff", None)
    return frozenset(hook(uow, request.subject_id)) if hook is not None else frozenset()


def tally(uow: ReadUnitOfWork, tags: RowTagger, request: ApprovalRequest) -> Tally:
    verify_request(tags, request)
    approvers: dict[str, str] = {}
    rejecters: dict[str, str] = {}
    forged: list[str] = []
    excluded = excluded_staff(uow, request)
    for d in uow.approval_decisions.on_content(request):
        if not tags.verify(approval_decision_message(d), d.mac):
            forged.append(str(d.id))  # a forged or edited decision never counts
            continue
        staff = uow.staff.get(d.staff_id)
        if not _eligible(tags, request, staff) or d.staff_id in excluded:
            continue
        assert staff is not None
        (approvers if d.decision == "approve" else rejecters)[staff.id] = staff.username
    return Tally(
        tuple(sorted(approvers.values())), tuple(sorted(rejecters.values())), tuple(forged)
    )


def require_quorum(uow: ReadUnitOfWork, tags: RowTagger, request: ApprovalRequest) -> Tally:
    """Re-count before acting on an approved request later (time-locked policy changes)."""
    counted = tally(uow, tags, request)
    current = content_digest(get_kind(request.kind).content(uow, request.subject_id))
    if current != request.digest or len(counted.approvers) < request.m:
        raise IntegrityFailure(f"approval request {request.id} no longer holds its quorum")
    return counted


# --- Deciding --------------------------------------------------------------------------------


def get_request(uow: ReadUnitOfWork, request_id: str) -> ApprovalRequest:
    row = uow.approval_requests.get(request_id)
    if row is None:
        raise NotFound("no such approval request", field="id")
    return row


def check_may_decide(request: ApprovalRequest, staff: Staff) -> None:
    if staff.role != "approver":
        raise Forbidden("only approvers decide approval requests")
    if request.required_group not in staff.groups:
        raise Forbidden(f"this request needs a member of group {request.required_group!r}")
    if staff.id == request.requester_staff_id:
        raise Forbidden("nobody approves their own request")


def content_problem(uow: ReadUnitOfWork, request: ApprovalRequest) -> str | None:
    """Why a request's content can no longer be trusted (a database edit), or None.

    The content shown to approvers must be what the (tagged) digest covers; a pending
    request's subject must still be what it was opened for. A settled request's subject may
    move on legitimately (its handler changed it), so only a pending one is compared."""
    if content_digest(request.content) != request.digest:
        return "shows content its digest does not cover"
    if request.status != PENDING:
        return None
    try:
        current = content_digest(get_kind(request.kind).content(uow, request.subject_id))
    except DomainError:
        return "has lost its subject"
    if current != request.digest:
        return f"has a {request.kind} that changed after it was opened"
    return None


class ContentTampered(Conflict):
    """A pending request's subject no longer matches the digest it was opened with: the row
    was rewritten behind the service's back. Refused (409), audited as ``integrity.failure``
    (the risk monitor freezes the wallet on it), and never re-bound."""

    code = "integrity_failure"


def _check_content(ctx: KindContext, request: ApprovalRequest, reviewed: str) -> DomainError | None:
    """The subject must still be what the request was opened for, and the approver must have
    reviewed exactly that content. Nothing is ever re-bound to changed content."""
    problem = content_problem(ctx.uow, request)
    if problem is not None:
        current = content_digest(get_kind(request.kind).content(ctx.uow, request.subject_id))
        ctx.uow.audit(
            "system",
            "integrity.failure",
            request.kind,
            request.subject_id,
            {
                "reason": f"approval request {problem}",
                "approval_request_id": request.id,
                "expected_digest": request.digest,
                "found_digest": current,
            },
        )
        return ContentTampered(
            "this request's subject changed after it was opened; it cannot be decided",
            field="id",
        )
    if reviewed != request.digest:
        return Conflict(
            "the digest you reviewed is not this request's; review the request again",
            field="digest",
        )
    return None


def decide(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    settings: Settings,
    *,
    request_id: str,
    staff: StaffPrincipal,
    decision: str,
    digest: str,
    totp: str | None,
    comment: str | None,
    now: datetime | None = None,
    passkey: str | None = None,
    rp: RelyingParty | None = None,
) -> str:
    """Record one approver's decision (step-up required: a TOTP code, or a passkey assertion
    over the digest and decision checked for relying party ``rp``); settle the request if it
    can.

    ``digest`` is the content digest the approver reviewed (``GET /approvals/{id}``); a
    mismatch is refused. Returns the request's status afterwards.
    """
    if decision not in ("approve", "reject"):
        raise InvalidInput("decision must be 'approve' or 'reject'", field="decision")
    step_up = _step_up(totp, passkey, rp)
    if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidInput(f"comment is longer than {MAX_COMMENT_LENGTH}", field="comment")
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        ctx = KindContext(uow, tags, staff.actor, moment)
        request = get_request(uow, request_id)
        verify_request(tags, request)
        row = load_active_staff(uow, tags, staff.staff_id)
        check_may_decide(request, row)
        if row.id in excluded_staff(uow, request):
            raise Forbidden("nobody decides a request about their own account")
        if request.status != PENDING:
            raise Conflict(f"this approval request is {request.status}", field="id")
        if request.expires_at <= moment:
            expire(ctx, request)
            error = Conflict("this approval request has expired", field="id")
        else:
            error = _check_content(ctx, request, digest)
            if error is None:
                error = _record(ctx, signer, settings, request, row, decision, step_up, comment)
            if error is None:
                settle(ctx, settings, request)
        status = request.status
    if error is not None:
        raise error  # after the commit: an expiry or a failed attempt is kept
    return status


@dataclass(frozen=True)
class StepUp:
    """How an approver proves it is them, now: a TOTP code or a passkey assertion."""

    totp: str | None
    passkey: str | None
    rp: RelyingParty | None


def _step_up(totp: str | None, passkey: str | None, rp: RelyingParty | None) -> StepUp:
    if (totp is None) == (passkey is None):
        raise InvalidInput("give either a TOTP code or a passkey assertion", field="totp")
    if passkey is not None and rp is None:
        raise InvalidInput("passkeys are not available here", field="passkey")
    return StepUp(totp, passkey, rp)


def _record(
    ctx: KindContext,
    signer: SignerPort,
    settings: Settings,
    request: ApprovalRequest,
    staff: Staff,
    decision: str,
    step_up: StepUp,
    comment: str | None,
) -> DomainError | None:
    """The signer first: it checks the step-up itself (the TOTP code, or the passkey's
    signature over the digest and decision) and records the decision in its ledger, where
    sign-time tiers and governed changes count it; then the row here."""
    if ctx.uow.approval_decisions.has_decided(request, staff.id):
        return Conflict("you have already decided this request", field="id")
    ensure_not_locked(ctx.uow, staff, ctx.now)
    passkey_row = None
    if step_up.passkey is not None:
        passkey_row = ctx.uow.staff_passkeys.by_credential_id(
            webauthn.credential_id_of(step_up.passkey)
        )
    try:
        receipt = signer.record_decision(
            staff_id=staff.id,
            kind=request.kind,
            content=request.content,
            decision=decision,
            totp=step_up.totp if step_up.passkey is None else None,
            passkey=step_up.passkey,
        )
    except StepUpFailed as exc:
        return step_up_failed(ctx.uow, settings, staff, ctx.now, exc)
    except (AccountLocked, Conflict) as exc:
        return exc
    if receipt.digest != request.digest:
        raise IntegrityFailure(
            f"the signer hashed approval request {request.id}'s content to another digest"
        )
    accepted(staff, receipt.totp_step)
    if passkey_row is not None and passkey_row.staff_id == staff.id:
        passkey_row.last_used_at = ctx.now
    passkey_id = passkey_row.id if passkey_row is not None else None
    row = ApprovalDecision(
        request_id=request.id,
        staff_id=staff.id,
        decision=decision,
        digest=request.digest,
        totp_step=receipt.totp_step,
        passkey_id=passkey_id,
        comment=comment,
        created_at=ctx.now,
        mac="",
    )
    row.mac = ctx.tags.tag(approval_decision_message(row))
    ctx.uow.approval_decisions.add(row, flush=True)
    action = "approval.approved" if decision == "approve" else "approval.rejected"
    ctx.uow.audit(
        ctx.actor,
        action,
        "approval_request",
        request.id,
        {
            "kind": request.kind,
            "subject_id": request.subject_id,
            "digest": request.digest,
            "comment": comment,
            "step_up": "passkey" if step_up.passkey is not None else "totp",
        },
    )
    return None


def settle(ctx: KindContext, settings: Settings, request: ApprovalRequest) -> None:
    """Reject or approve the request if its valid decisions say so (same transaction)."""
    counted = tally(ctx.uow, ctx.tags, request)
    if counted.forged:
        # Someone wrote decisions into the database: they do not count, and it is audited
        # (the risk monitor freezes on it) rather than silently skipped.
        ctx.uow.audit(
            "system",
            INTEGRITY_FAILURE,
            request.kind,
            request.subject_id,
            {
                "reason": f"approval request {request.id} has decisions that fail their tag",
                "approval_request_id": request.id,
                "decisions": list(counted.forged),
            },
        )
    kind = get_kind(request.kind)
    if len(counted.rejecters) >= settings.approval_rejections_to_reject:
        _close(
            ctx.uow,
            ctx.actor,
            ctx.now,
            request,
            "rejected",
            {"rejected_by": list(counted.rejecters)},
        )
        kind.on_rejected(ctx, request)
    elif len(counted.approvers) >= request.m:
        _close(
            ctx.uow,
            ctx.actor,
            ctx.now,
            request,
            "approved",
            {"approved_by": list(counted.approvers)},
        )
        kind.on_approved(ctx, request)


def _close(
    uow: UnitOfWork,
    actor: str,
    now: datetime,
    request: ApprovalRequest,
    status: str,
    data: dict[str, Any],
) -> None:
    request.status = status
    request.decided_at = now
    uow.audit(
        actor,
        f"approval.request_{status}",
        "approval_request",
        request.id,
        {
            "kind": request.kind,
            "subject_id": request.subject_id,
            "digest": request.digest,
            "required": {"group": request.required_group, "m": request.m},
            **data,
        },
    )


def expire(ctx: KindContext, request: ApprovalRequest) -> None:
    _close(ctx.uow, ctx.actor, ctx.now, request, "expired", {})
    get_kind(request.kind).on_expired(ctx, request)


def cancel_for_subject(
    uow: UnitOfWork, *, actor: str, now: datetime, kind: str, subject_id: str
) -> None:
    """The subject went away (withdrawal cancelled, entry removed): close its open request.
    No KEK needed: a request's tag covers its quorum and digest, not its status."""
    for request in uow.approval_requests.pending_for_subject(kind, subject_id):
        _close(uow, actor, now, request, "cancelled", {})


def expire_due(
    db: Database, tags: RowTagger, *, now: datetime | None = None, batch: int = 200
) -> int:
    """Expire pending requests past their deadline (Runtime.tick). Returns how many."""
    moment = now_utc(now)
    # A cheap read first: the background pass runs every second, and most passes have
    # nothing to expire, so they should not take the global write lock.
    with db.read() as uow:
        if not uow.approval_requests.any_expired(moment):
            return 0
    with db.write() as uow:
        ctx = KindContext(uow, tags, "system", moment)
        due = uow.approval_requests.expired(moment, limit=batch)
        for request in due:
            expire(ctx, request)
    return len(due)


# --- Reading ---------------------------------------------------------------------------------


def decisions_view(
    uow: ReadUnitOfWork, request: ApprovalRequest, tags: RowTagger | None = None
) -> list[dict[str, Any]]:
    """The decisions on a request. With the KEK, ``counts`` is the verified tally's verdict;
    without it (views that hold no KEK), it says only whether the digest still matches."""
    counting: set[str] | None = None
    if tags is not None:
        counted = tally(uow, tags, request)
        counting = set(counted.approvers) | set(counted.rejecters)
    rows = uow.approval_decisions.with_usernames(request.id)
    return [
        {
            "staff": username,
            "decision": d.decision,
            "comment": d.comment,
            "digest": d.digest,
            "counts": d.digest == request.digest and (counting is None or username in counting),
            "created_at": d.created_at.isoformat(),
        }
        for d, username in rows
    ]


def request_view(uow: ReadUnitOfWork, tags: RowTagger, request: ApprovalRequest) -> dict[str, Any]:
    counted = tally(uow, tags, request)
    return {
        "id": request.id,
        "kind": request.kind,
        "subject_id": request.subject_id,
        "status": request.status,
        "required": {"group": request.required_group, "m": request.m},
        "approvals_counted": len(counted.approvers),
        "digest": request.digest,
        "content": request.content,
        "requester": request.requester,
        "created_at": request.created_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "decisions": decisions_view(uow, request, tags),
    }


def request_for_subject(uow: ReadUnitOfWork, kind: str, subject_id: str) -> ApprovalRequest | None:
    return uow.approval_requests.latest_for_subject(kind, subject_id)


def list_requests(
    uow: ReadUnitOfWork,
    *,
    pending: bool,
    kind: str | None,
    limit: int,
    waiting_for: StaffPrincipal | None,
) -> list[ApprovalRequest]:
    """Requests, newest first. ``waiting_for``: only those this approver may still decide."""
    rows = uow.approval_requests.newest(pending=pending, kind=kind, limit=limit)
    if waiting_for is None:
        return rows
    return [r for r in rows if _waits_for(uow, r, waiting_for)]


def _waits_for(uow: ReadUnitOfWork, request: ApprovalRequest, staff: StaffPrincipal) -> bool:
    if staff.role != "approver" or request.required_group not in staff.groups:
        return False
    if request.requester_staff_id == staff.staff_id:
        return False
    if staff.staff_id in excluded_staff(uow, request):
        return False
    return not uow.approval_decisions.has_decided(request, staff.staff_id)


# --- Read use cases --------------------------------------------------------------------------


def show_request(db: Database, tags: RowTagger, request_id: str) -> dict[str, Any]:
    with db.read() as uow:
        return request_view(uow, tags, get_request(uow, request_id))


def approvals_index(
    db: Database,
    tags: RowTagger,
    *,
    pending: bool,
    kind: str | None,
    limit: int,
    waiting_for: StaffPrincipal | None,
) -> dict[str, Any]:
    with db.read() as uow:
        rows = list_requests(uow, pending=pending, kind=kind, limit=limit, waiting_for=waiting_for)
        return {"approvals": [request_view(uow, tags, r) for r in rows]}
