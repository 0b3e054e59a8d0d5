"""Approval handlers for staff requests that an operator applies after their quorum.

An authenticator reset and a staff change share one life: approvers decide it (never the
member it is about), an approval only marks it ``approved``, and an operator then applies
it, which is when the signer acts (a new TOTP secret, an enrolment) and shows the new secret
once. Rejection and expiry close it. Each kind names its rows, its content and its event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.governance.approvals import KindContext

APPROVED = "approved"


class StaffRequestRow(Protocol):
    id: str
    staff_id: str
    status: str
    decided_at: datetime | None


class AppliedLaterApprovals:
    """The shared handler; a kind sets ``name``, ``approved_event`` and ``id_key`` (the key
    naming the row in that event) and implements ``row`` and ``content``."""

    name: str
    approved_event: str
    id_key: str

    def row(self, uow: ReadUnitOfWork, subject_id: str) -> StaffRequestRow:
        raise NotImplementedError

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def excluded_staff(self, uow: ReadUnitOfWork, subject_id: str) -> set[str]:
        return {self.row(uow, subject_id).staff_id}

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        row = self.row(ctx.uow, request.subject_id)
        row.status = APPROVED
        ctx.uow.audit(
            ctx.actor,
            self.approved_event,
            "staff",
            row.staff_id,
            {self.id_key: row.id, "approval_request_id": request.id},
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        self._close(ctx, request, "rejected")

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        self._close(ctx, request, "expired")

    def _close(self, ctx: KindContext, request: ApprovalRequest, status: str) -> None:
        row = self.row(ctx.uow, request.subject_id)
        row.status, row.decided_at = status, ctx.now
