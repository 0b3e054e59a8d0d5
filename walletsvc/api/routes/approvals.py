"""Approval requests: list, show, decide (staff approvers, with a fresh TOTP code)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from walletsvc.api.console.security import relying_party
from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel, Text
from walletsvc.api.schemas.governance import ApprovalRequestList, ApprovalRequestView
from walletsvc.governance import approvals
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["approvals"], responses=error_responses(401, 403))
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]
Approver = Annotated[StaffPrincipal, Depends(require_staff("approver"))]


class DecisionBody(StrictModel):
    decision: Literal["approve", "reject"]
    digest: Text = Field(description="The content digest the approver reviewed (from GET).")
    totp: Text | None = Field(default=None, description="A fresh TOTP code; or `passkey`.")
    passkey: dict[str, Any] | None = Field(
        default=None,
        description="In place of `totp`: the WebAuthn assertion (PublicKeyCredential JSON) of"
        " a registered passkey over SHA-256('walletsvc-approval-v1' 0 decision 0 digest).",
    )
    comment: Prose | None = None


@router.get("/approvals", responses=error_responses(422))
def index_approvals(
    runtime: RuntimeDep,
    principal: Reader,
    pending: bool = False,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ApprovalRequestList:
    # For an approver, pending=true means "what waits for me"; for others, all pending.
    waiting_for = (
        principal
        if pending and isinstance(principal, StaffPrincipal) and principal.role == "approver"
        else None
    )
    return ApprovalRequestList.model_validate(
        approvals.approvals_index(
            runtime.db,
            runtime.tags,
            pending=pending,
            kind=kind,
            limit=limit,
            waiting_for=waiting_for,
        )
    )


@router.get("/approvals/{request_id}", responses=error_responses(404, 422))
def show_approval(request_id: str, runtime: RuntimeDep, _: Reader) -> ApprovalRequestView:
    return ApprovalRequestView.model_validate(
        approvals.show_request(runtime.db, runtime.tags, request_id)
    )


@router.post("/approvals/{request_id}", responses=error_responses(404, 409, 422, 429))
def decide(
    request_id: str, body: DecisionBody, request: Request, runtime: RuntimeDep, staff: Approver
) -> ApprovalRequestView:
    try:
        approvals.decide(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            request_id=request_id,
            staff=staff,
            decision=body.decision,
            digest=body.digest,
            totp=body.totp,
            comment=body.comment,
            passkey=json.dumps(body.passkey) if body.passkey is not None else None,
            rp=relying_party(request, runtime.settings),
        )
    except approvals.ContentTampered:
        # The integrity failure is committed; the risk monitor freezes the wallet on it now
        # rather than at its next background pass.
        runtime.risk.evaluate()
        raise
    return ApprovalRequestView.model_validate(
        approvals.show_request(runtime.db, runtime.tags, request_id)
    )
