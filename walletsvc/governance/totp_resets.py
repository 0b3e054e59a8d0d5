"""Resetting a lost authenticator: a governed action (kind ``staff_totp_reset``).

A new TOTP secret replaces a staff member's only when a quorum agrees, because whoever holds
the new secret can approve as that member. The quorum is the policy's ``policy_change`` one
(a reset changes who can approve, as a policy change does), and the member concerned never
counts toward it.

The operator who asks gets the new enrolment (otpauth:// URI, QR code) once, at once, to hand
to the member; it works only after the approvals. Meanwhile the new secret is sealed to the
reset (not to the member), so copying it into the member's row by hand yields nothing that
opens: only the approval re-seals it to the member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import new_id
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.models_staff_auth import StaffTotpReset
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.staff import (
    ISSUER,
    TOTP_DIGITS,
    TOTP_PERIOD_S,
    get_staff_by_name,
    now_utc,
)
from walletsvc.keys.errors import SealedSecretError
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.sealing import TotpSealer

KIND = "staff_totp_reset"
PENDING = "pending_approval"
MAX_REASON_LENGTH = 1_000


@dataclass(frozen=True)
class PendingEnrolment:
    """One-time output: the new authenticator's enrolment, valid once approved."""

    reset_id: str
    approval_request_id: str
    username: str
    otpauth_uri: str


def _binding(reset_id: str) -> str:
    return f"totp-reset:{reset_id}"


def request_reset(
    db: Database,
    tags: RowTagger,
    totp_secrets: TotpSealer,
    *,
    username: str,
    reason: str,
    requester: Requester,
    now: datetime | None = None,
) -> PendingEnrolment:
    """Open a reset of ``username``'s authenticator; returns the new enrolment once."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"a reason (1-{MAX_REASON_LENGTH} characters) is required", field="reason"
        )
    moment = now_utc(now)
    secret = pyotp.random_base32()
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
        row.totp_secret_enc = totp_secrets.seal(_binding(row.id), secret)
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
    uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S).provisioning_uri(
        name=username, issuer_name=ISSUER
    )
    return PendingEnrolment(row.id, request.id, username, uri)


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


class TotpResetApprovals:
    """The handler; ``totp_secrets`` re-seals the new secret to the member at approval (the
    CLI's read-only commands register it without one: they never approve)."""

    name = KIND

    def __init__(self, totp_secrets: TotpSealer | None) -> None:
        self._totp_secrets = totp_secrets

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(uow, _get(uow, subject_id))

    def excluded_staff(self, uow: ReadUnitOfWork, subject_id: str) -> set[str]:
        return {_get(uow, subject_id).staff_id}

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        if self._totp_secrets is None:
            raise IntegrityFailure("this process cannot apply an authenticator reset")
        row = _get(ctx.uow, request.subject_id)
        target = ctx.uow.staff.get(row.staff_id)
        if target is None:
            raise IntegrityFailure(f"authenticator reset {row.id} has lost its staff member")
        try:
            secret = self._totp_secrets.unseal(_binding(row.id), row.totp_secret_enc)
        except SealedSecretError as exc:
            raise IntegrityFailure(str(exc)) from None
        target.totp_secret_enc = self._totp_secrets.seal(target.id, secret)
        target.totp_last_step = None
        target.failed_attempts = 0
        target.locked_until = None
        revoked = ctx.uow.staff_sessions.revoke_all_of(target.id, ctx.now)
        _close(ctx.uow, row, "applied", ctx.now)
        ctx.uow.audit(
            ctx.actor,
            "staff.totp_reset_applied",
            "staff",
            target.id,
            {"username": target.username, "reset_id": row.id, "sessions_revoked": revoked},
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, _get(ctx.uow, request.subject_id), "rejected", ctx.now)

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, _get(ctx.uow, request.subject_id), "expired", ctx.now)


def _close(uow: UnitOfWork, row: StaffTotpReset, status: str, now: datetime) -> None:
    row.status, row.decided_at = status, now


def resets_index(db: Database, *, limit: int = 50) -> list[dict[str, Any]]:
    with db.read() as uow:
        return [
            {
                **_content(uow, row),
                "status": row.status,
                "approval_request_id": row.approval_request_id,
                "created_at": row.created_at.isoformat(),
            }
            for row in uow.staff_totp_resets.newest(limit)
        ]
