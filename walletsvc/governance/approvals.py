"""One approval mechanism for every governed action.

An ``ApprovalRequest`` names a kind (withdrawal, allowlist_add, policy_change, ...), a subject,
the group and number m of approvers it needs, an expiry, its requester and the SHA-256 digest
of the canonical content it approves. Each kind registers an ``ApprovalKind``: how to build
that content from the subject, and what happens when the request is approved, rejected or
expires. Adding a governed action is: write the handler, register it in
walletsvc/bootstrap/approval_kinds.py.

Counting is strict and repeated from the rows every time (never from a cached counter):
  * a decision counts only if its digest equals the request's current digest;
  * its MAC (keyed from the KEK, outside the DB) verifies, as do the request's and the staff
    member's, so a database edit cannot forge a quorum;
  * the staff member is enabled, an approver, in the required group, not the requester;
  * one person counts once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models_governance import ApprovalDecision, ApprovalRequest, Staff
from walletsvc.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from walletsvc.governance.policies import ROW_MAC, IntegrityFailure
from walletsvc.governance.staff import (
    StaffPrincipal,
    check_totp,
    load_active_staff,
    now_utc,
    staff_is_genuine,
)
from walletsvc.keys.kek import Kek
from walletsvc.policy.document import GovernedAction, PolicyDocument
from walletsvc.policy.engine import approval_deadline

Decision = Literal["approve", "reject"]
MAX_COMMENT_LENGTH = 500
PENDING = "pending"


@dataclass
class KindContext:
    """What a handler gets: the open write transaction, the KEK, who acted, and when."""

    uow: UnitOfWork
    kek: Kek
    actor: str
    now: datetime


class ApprovalKind(Protocol):
    name: str

    def content(self, session: Session, subject_id: str) -> dict[str, Any]:
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


def content_digest(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_mac_message(r: ApprovalRequest) -> bytes:
    return (
        f"approval-request|{r.id}|{r.kind}|{r.subject_id}|{r.required_group}|{r.m}|{r.digest}"
        f"|{r.requester}|{r.requester_staff_id or '-'}|{r.expires_at.isoformat()}"
    ).encode()


def decision_mac_message(d: ApprovalDecision) -> bytes:
    return (
        f"approval-decision|{d.request_id}|{d.staff_id}|{d.decision}|{d.digest}|{d.totp_step}"
    ).encode()


def _tag_request(kek: Kek, r: ApprovalRequest) -> None:
    r.mac = kek.mac(ROW_MAC, request_mac_message(r))


def verify_request(kek: Kek, r: ApprovalRequest) -> None:
    if not kek.verify_mac(ROW_MAC, request_mac_message(r), r.mac):
        raise IntegrityFailure(f"approval request {r.id} fails its integrity check")


# --- Opening a request -----------------------------------------------------------------------


def open_request(
    uow: UnitOfWork,
    kek: Kek,
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
    content = get_kind(kind).content(uow.session, subject_id)
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
    uow.session.add(request)
    uow.session.flush()
    _tag_request(kek, request)
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
    kek: Kek,
    row: GovernedRow,
    *,
    kind: str,
    approvers: Approvers | None,
    requester: Requester,
    now: datetime,
    event: str,
    subject_type: str,
    details: Callable[[], dict[str, Any]],
) -> ApprovalRequest | None:
    """Create ``row`` and open its approval request in the caller's transaction; audit both.

    ``approvers`` None: the action needs no approval (the row is created and audited alone).
    A row with an ``approval_request_id`` column is linked to its request before ``details``
    builds the ``event``'s data.
    """
    uow.session.add(row)
    uow.session.flush()
    request = None
    if approvers is not None:
        request = open_request(
            uow,
            kek,
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


def _eligible(kek: Kek, request: ApprovalRequest, staff: Staff | None) -> bool:
    return (
        staff is not None
        and staff.disabled_at is None
        and staff_is_genuine(kek, staff)
        and staff.role == "approver"
        and request.required_group in staff.groups
        and staff.id != request.requester_staff_id
    )


def tally(session: Session, kek: Kek, request: ApprovalRequest) -> Tally:
    verify_request(kek, request)
    approvers: dict[str, str] = {}
    rejecters: dict[str, str] = {}
    for d in session.scalars(
        select(ApprovalDecision).where(
            ApprovalDecision.request_id == request.id,
            ApprovalDecision.digest == request.digest,
        )
    ):
        if not kek.verify_mac(ROW_MAC, decision_mac_message(d), d.mac):
            continue  # a forged or edited decision never counts
        staff = session.get(Staff, d.staff_id)
        if not _eligible(kek, request, staff):
            continue
        assert staff is not None
        (approvers if d.decision == "approve" else rejecters)[staff.id] = staff.username
    return Tally(tuple(sorted(approvers.values())), tuple(sorted(rejecters.values())))


def require_quorum(session: Session, kek: Kek, request: ApprovalRequest) -> Tally:
    """Re-count before acting on an approved request later (time-locked policy changes)."""
    counted = tally(session, kek, request)
    current = content_digest(get_kind(request.kind).content(session, request.subject_id))
    if current != request.digest or len(counted.approvers) < request.m:
        raise IntegrityFailure(f"approval request {request.id} no longer holds its quorum")
    return counted


# --- Deciding --------------------------------------------------------------------------------


def get_request(session: Session, request_id: str) -> ApprovalRequest:
    row = session.get(ApprovalRequest, request_id)
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


def _rebind_if_changed(ctx: KindContext, request: ApprovalRequest) -> None:
    """If the subject changed since the request opened, bind the request to the new content:
    every earlier decision (made for the old digest) stops counting."""
    content = get_kind(request.kind).content(ctx.uow.session, request.subject_id)
    digest = content_digest(content)
    if digest == request.digest:
        return
    old = request.digest
    request.digest, request.content = digest, content
    _tag_request(ctx.kek, request)
    ctx.uow.audit(
        "system",
        "approval.digest_changed",
        "approval_request",
        request.id,
        {"old_digest": old, "new_digest": digest},
    )


def decide(
    db: Database,
    kek: Kek,
    settings: Settings,
    *,
    request_id: str,
    staff: StaffPrincipal,
    decision: str,
    totp: str,
    comment: str | None,
    now: datetime | None = None,
) -> str:
    """Record one approver's decision (step-up TOTP required); settle the request if it can.

    Returns the request's status afterwards.
    """
    if decision not in ("approve", "reject"):
        raise InvalidInput("decision must be 'approve' or 'reject'", field="decision")
    if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidInput(f"comment is longer than {MAX_COMMENT_LENGTH}", field="comment")
    moment = now_utc(now)
    error: DomainError | None = None
    with db.write() as uow:
        ctx = KindContext(uow, kek, staff.actor, moment)
        request = get_request(uow.session, request_id)
        verify_request(kek, request)
        row = load_active_staff(uow, kek, staff.staff_id)
        check_may_decide(request, row)
        if request.status != PENDING:
            raise Conflict(f"this approval request is {request.status}", field="id")
        if request.expires_at <= moment:
            expire(ctx, request)
            error = Conflict("this approval request has expired", field="id")
        else:
            _rebind_if_changed(ctx, request)
            error = _record(ctx, settings, request, row, decision, totp, comment)
            if error is None:
                settle(ctx, settings, request)
        status = request.status
    if error is not None:
        raise error  # after the commit: an expiry or a failed attempt is kept
    return status


def _record(
    ctx: KindContext,
    settings: Settings,
    request: ApprovalRequest,
    staff: Staff,
    decision: str,
    totp: str,
    comment: str | None,
) -> DomainError | None:
    session = ctx.uow.session
    already = session.scalar(
        select(ApprovalDecision.id).where(
            ApprovalDecision.request_id == request.id,
            ApprovalDecision.staff_id == staff.id,
            ApprovalDecision.digest == request.digest,
        )
    )
    if already is not None:
        return Conflict("you have already decided this request", field="id")
    step, error = check_totp(ctx.uow, ctx.kek, settings, staff, totp, ctx.now)
    if error is not None or step is None:
        return error
    row = ApprovalDecision(
        request_id=request.id,
        staff_id=staff.id,
        decision=decision,
        digest=request.digest,
        totp_step=step,
        comment=comment,
        created_at=ctx.now,
        mac="",
    )
    row.mac = ctx.kek.mac(ROW_MAC, decision_mac_message(row))
    session.add(row)
    session.flush()
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
        },
    )
    return None


def settle(ctx: KindContext, settings: Settings, request: ApprovalRequest) -> None:
    """Reject or approve the request if its valid decisions say so (same transaction)."""
    counted = tally(ctx.uow.session, ctx.kek, request)
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
    for request in uow.session.scalars(
        select(ApprovalRequest).where(
            ApprovalRequest.kind == kind,
            ApprovalRequest.subject_id == subject_id,
            ApprovalRequest.status == PENDING,
        )
    ):
        _close(uow, actor, now, request, "cancelled", {})


def _due(moment: datetime) -> tuple[Any, ...]:
    return (ApprovalRequest.status == PENDING, ApprovalRequest.expires_at <= moment)


def expire_due(db: Database, kek: Kek, *, now: datetime | None = None, batch: int = 200) -> int:
    """Expire pending requests past their deadline (Runtime.tick). Returns how many."""
    moment = now_utc(now)
    # A cheap read first: the background pass runs every second, and most passes have
    # nothing to expire, so they should not take the global write lock.
    with db.read() as session:
        if session.scalar(select(ApprovalRequest.id).where(*_due(moment)).limit(1)) is None:
            return 0
    with db.write() as uow:
        ctx = KindContext(uow, kek, "system", moment)
        due = list(
            uow.session.scalars(
                select(ApprovalRequest)
                .where(*_due(moment))
                .order_by(ApprovalRequest.expires_at)
                .limit(batch)
            )
        )
        for request in due:
            expire(ctx, request)
    return len(due)


# --- Reading ---------------------------------------------------------------------------------


def decisions_view(
    session: Session, request: ApprovalRequest, kek: Kek | None = None
) -> list[dict[str, Any]]:
    """The decisions on a request. With the KEK, ``counts`` is the verified tally's verdict;
    without it (views that hold no KEK), it says only whether the digest still matches."""
    counting: set[str] | None = None
    if kek is not None:
        counted = tally(session, kek, request)
        counting = set(counted.approvers) | set(counted.rejecters)
    rows = session.execute(
        select(ApprovalDecision, Staff.username)
        .join(Staff, Staff.id == ApprovalDecision.staff_id)
        .where(ApprovalDecision.request_id == request.id)
        .order_by(ApprovalDecision.created_at, ApprovalDecision.id)
    ).all()
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


def request_view(session: Session, kek: Kek, request: ApprovalRequest) -> dict[str, Any]:
    counted = tally(session, kek, request)
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
        "decisions": decisions_view(session, request, kek),
    }


def request_for_subject(session: Session, kind: str, subject_id: str) -> ApprovalRequest | None:
    return session.scalar(
        select(ApprovalRequest)
        .where(ApprovalRequest.kind == kind, ApprovalRequest.subject_id == subject_id)
        .order_by(ApprovalRequest.created_at.desc())
        .limit(1)
    )


def list_requests(
    session: Session,
    *,
    pending: bool,
    kind: str | None,
    limit: int,
    waiting_for: StaffPrincipal | None,
) -> list[ApprovalRequest]:
    """Requests, newest first. ``waiting_for``: only those this approver may still decide."""
    query = select(ApprovalRequest)
    if pending:
        query = query.where(ApprovalRequest.status == PENDING)
    if kind is not None:
        query = query.where(ApprovalRequest.kind == kind)
    rows = list(session.scalars(query.order_by(ApprovalRequest.created_at.desc()).limit(limit)))
    if waiting_for is None:
        return rows
    return [r for r in rows if _waits_for(session, r, waiting_for)]


def _waits_for(session: Session, request: ApprovalRequest, staff: StaffPrincipal) -> bool:
    if staff.role != "approver" or request.required_group not in staff.groups:
        return False
    if request.requester_staff_id == staff.staff_id:
        return False
    decided = session.scalar(
        select(ApprovalDecision.id).where(
            ApprovalDecision.request_id == request.id,
            ApprovalDecision.staff_id == staff.staff_id,
            ApprovalDecision.digest == request.digest,
        )
    )
    return decided is None
