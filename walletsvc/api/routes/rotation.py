"""Key rotation: opens an approval request (kind ``key_rotation``); rotates at quorum."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import StrictStr
from sqlalchemy import select

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.schemas import StrictModel
from walletsvc.db.models_risk import KeyRotation
from walletsvc.governance import approvals
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident.rotation import get_rotation, propose, rotation_status, rotation_view
from walletsvc.incident.unfreeze import Requester
from walletsvc.wallets.service import get_wallet

router = APIRouter(tags=["incident response"])
# Staff only: a rotation replaces the wallet's keys; approvers decide it at quorum.
Proposer = Annotated[StaffPrincipal, Depends(require_staff("approver", "operator"))]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class RotateBody(StrictModel):
    reason: StrictStr


@router.post("/wallets/{wallet}/rotate", status_code=201)
def post_rotate(
    wallet: str, body: RotateBody, runtime: RuntimeDep, staff: Proposer
) -> dict[str, Any]:
    row = propose(
        runtime.db,
        runtime.tags,
        wallet=wallet,
        reason=body.reason,
        requester=Requester(staff.actor, staff.staff_id),
    )
    return _show(runtime, row.id)


@router.get("/wallets/{wallet}/rotations")
def index_rotations(wallet: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    with runtime.db.read() as session:
        row = get_wallet(session, wallet)
        status = rotation_status(session, row)
        rows = session.scalars(
            select(KeyRotation)
            .where(KeyRotation.wallet_id == row.id)
            .order_by(KeyRotation.created_at.desc())
        )
        return {**status, "rotations": [rotation_view(session, r) for r in rows]}


@router.get("/rotations/{rotation_id}")
def show_rotation(rotation_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return _show(runtime, rotation_id)


def _show(runtime: RuntimeDep, rotation_id: str) -> dict[str, Any]:
    with runtime.db.read() as session:
        row = get_rotation(session, rotation_id)
        view = rotation_view(session, row)
        if row.approval_request_id:
            request = approvals.get_request(session, row.approval_request_id)
            view["approval"] = approvals.request_view(session, runtime.tags, request)
        return view
