"""Approval requests: list, show, decide (staff approvers, with a fresh TOTP code)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.schemas import StrictModel
from walletsvc.governance import approvals
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["approvals"])
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]
Approver = Annotated[StaffPrincipal, Depends(require_staff("approver"))]


class DecisionBody(StrictModel):
    decision: Literal["approve", "reject"]
    totp: StrictStr
    comment: StrictStr | None = None


@router.get("/approvals")
def index_approvals(
    runtime: RuntimeDep,
    principal: Reader,
    pending: bool = False,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    # For an approver, pending=true means "what waits for me"; for others, all pending.
    waiting_for = (
        principal
        if pending and isinstance(principal, StaffPrincipal) and principal.role == "approver"
        else None
    )
    return approvals.approvals_index(
        runtime.db, runtime.kek, pending=pending, kind=kind, limit=limit, waiting_for=waiting_for
    )


@router.get("/approvals/{request_id}")
def show_approval(request_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return approvals.show_request(runtime.db, runtime.kek, request_id)


@router.post("/approvals/{request_id}")
def decide(
    request_id: str, body: DecisionBody, runtime: RuntimeDep, staff: Approver
) -> dict[str, Any]:
    approvals.decide(
        runtime.db,
        runtime.kek,
        runtime.settings,
        request_id=request_id,
        staff=staff,
        decision=body.decision,
        totp=body.totp,
        comment=body.comment,
    )
    return approvals.show_request(runtime.db, runtime.kek, request_id)
