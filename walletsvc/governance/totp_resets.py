"""Resetting a lost authenticator: a governed action (kind ``staff_totp_reset``).

A new TOTP secret replaces a staff member's only when a quorum agrees, because whoever holds
the new secret can approve as that member. The quorum is the policy's ``policy_change`` one
(a reset changes who can approve, as a policy change does), and the member concerned never
counts toward it.

The secret is the signer's (walletsvc.signer.people): once the request is approved, an
operator applies the reset (:func:`apply_reset`); the signer counts the decisions it recorded
on the reset's content itself (its own ``policy_change`` quorum, the member excluded), makes
the new secret and answers it once, to hand to the member. Each reset applies once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from walletsvc.db.database import Database
from walletsvc.db.models import new_id
from walletsvc.db.models_staff_auth import StaffTotpReset
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.applied_later import AppliedLaterApprovals
from walletsvc.governance.approvals import Approvers, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.staff import get_staff_by_name, now_utc
from walletsvc.keys.integrity import RowTagger

KIND = "staff_totp_reset"
PENDING = "pending_approval"
APPROVED = "approved"  # the quorum agreed: an operator applies it (the signer's new secret)
MAX_REASON_LENGTH = 1_000


@dataclass(frozen=True)
class PendingReset:
    """A reset waiting for its quorum."""

    reset_id: str
    approval_request_id: str
    username: str


@dataclass(frozen=True)
class AppliedReset:
    """One-time output: the new authenticator's enrolment, from the signer."""

    reset_id: str
    username: str
    otpauth_uri: str


def request_reset(
    db: Database,
    tags: RowTagger,
    *,
    username: str,
    reason: str,
    requester: Requester,
    now: datetime | None = None,
) -> PendingReset:
    """Open a reset of ``username``'s authenticator (applied once its quorum agreed)."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"a reason (1-{MAX_REASON_LENGTH} characters) is required", field="reason"
        )
    moment = now_utc(now)
    with db.write() as uow:
        target = get_staff_by_name(uow, username)
        if target.disabled_at is not None:
            raise Conflict(f"{username!r} is disabled", field="username")
        if requester.staff_id == target.id:
            raise Conflict("ask an operator to reset your own authenticator", field="username")
        document = active_policy(uow, tags, None).document
        approvers = Approvers.from_policy(document, "policy_change", moment)
        row = StaffTotpReset(
            id=new_id(),
            staff_id=target.id,
            reason=reason,
            status=PENDING,
            requested_by=requester.actor,
            created_at=moment,
        )
        request = approvals.governed_action(
            uow,
            tags,
            row,
            store=uow.staff_totp_resets,
            kind=KIND,
            approvers=approvers,
            requester=requester,
            now=moment,
            event="staff.totp_reset_requested",
            subject_type="staff",
            details=lambda: {
                "username": username,
                "reason": reason,
                "approval_request_id": row.approval_request_id,
            },
        )
        assert request is not None
    return PendingReset(row.id, request.id, username)


def apply_reset(
    db: Database,
    signer: SignerPort,
    *,
    reset_id: str,
    actor: str,
    now: datetime | None = None,
) -> AppliedReset:
    """Apply an approved reset: the signer checks the quorum on the reset's content itself,
    makes the new secret and answers it once; here the member's lock and sessions end."""
    moment = now_utc(now)
    with db.write() as uow:
        row = _get(uow, reset_id)
        if row.status != APPROVED:
            raise Conflict(f"this authenticator reset is {row.status}", field="id")
        request = (
            uow.approval_requests.get(row.approval_request_id) if row.approval_request_id else None
        )
        target = uow.staff.get(row.staff_id)
        if request is None or target is None:
            raise IntegrityFailure(f"authenticator reset {row.id} has lost its request or member")
        enrolment = signer.reset_totp(target.id, request.content)
        if enrolment.otpauth_uri is None:
            raise IntegrityFailure("the signer answered a reset without an enrolment")
        target.totp_last_step = None
        target.failed_attempts = 0
        target.locked_until = None
        revoked = uow.staff_sessions.revoke_all_of(target.id, moment)
        row.status, row.decided_at = "applied", moment
        uow.audit(
            actor,
            "staff.totp_reset_applied",
            "staff",
            target.id,
            {"username": target.username, "reset_id": row.id, "sessions_revoked": revoked},
        )
        return AppliedReset(row.id, target.username, enrolment.otpauth_uri)


def _get(uow: ReadUnitOfWork, reset_id: str) -> StaffTotpReset:
    row = uow.staff_totp_resets.get(reset_id)
    if row is None:
        raise NotFound("no such authenticator reset", field="id")
    return row


def _content(uow: ReadUnitOfWork, row: StaffTotpReset) -> dict[str, Any]:
    # What approvers agree to: this member gets a new authenticator, for this reason.
    target = uow.staff.get(row.staff_id)
    return {
        "kind": KIND,
        "reset_id": row.id,
        "staff_id": row.staff_id,
        "username": target.username if target else None,
        "role": target.role if target else None,
        "reason": row.reason,
        "requested_by": row.requested_by,
    }


class TotpResetApprovals(AppliedLaterApprovals):
    """The handler: an approved reset waits for an operator to apply it (:func:`apply_reset`),
    which is when the signer makes the new secret."""

    name = KIND
    approved_event = "staff.totp_reset_approved"
    id_key = "reset_id"

    def row(self, uow: ReadUnitOfWork, subject_id: str) -> StaffTotpReset:
        return _get(uow, subject_id)

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(uow, _get(uow, subject_id))


def resets_index(db: Database, *, limit: int = 50) -> list[dict[str, Any]]:
    with db.read() as uow:
        return [
            {
                **_content(uow, row),
                "status": row.status,
                "id": row.id,
                "approval_request_id": row.approval_request_id,
                "created_at": row.created_at.isoformat(),
            }
            for row in uow.staff_totp_resets.newest(limit)
        ]
