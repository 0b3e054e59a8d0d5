"""Key rotation: opens an approval request (kind ``key_rotation``); rotates at quorum."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import StrictStr
from sqlalchemy import select

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import StrictModel
from walletsvc.api.schemas.incident import RotationDetail, WalletRotations
from walletsvc.db.models_risk import KeyRotation
from walletsvc.governance import approvals
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident.rotation import get_rotation, propose, rotation_status, rotation_view
from walletsvc.incident.unfreeze import Requester
from walletsvc.wallets.service import get_wallet

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Staff only: a rotation replaces the wallet's keys; approvers decide it at quorum.
Proposer = Annotated[StaffPrincipal, Depends(require_staff("approver", "operator"))]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class RotateBody(StrictModel):
    reason: StrictStr


@router.post(
    "/wallets/{wallet}/rotate",
    status_code=201,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def post_rotate(
    wallet: str, body: RotateBody, runtime: RuntimeDep, staff: Proposer
) -> RotationDetail:
    row = propose(
        runtime.db,
        runtime.tags,
        wallet=wallet,
        reason=body.reason,
        requester=Requester(staff.actor, staff.staff_id),
    )
    return _show(runtime, row.id)


@router.get("/wallets/{wallet}/rotations", responses=error_responses(404, 422))
def index_rotations(wallet: str, runtime: RuntimeDep, _: Reader) -> WalletRotations:
    with runtime.db.read() as session:
        row = get_wallet(session, wallet)
        status = rotation_status(session, row)
        rows = session.scalars(
            select(KeyRotation)
            .where(KeyRotation.wallet_id == row.id)
            .order_by(KeyRotation.created_at.desc())
        )
        return WalletRotations.model_validate(
            {**status, "rotations": [rotation_view(session, r) for r in rows]}
        )


@router.get(
    "/rotations/{rotation_id}",
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def show_rotation(rotation_id: str, runtime: RuntimeDep, _: Reader) -> RotationDetail:
    return _show(runtime, rotation_id)


def _show(runtime: RuntimeDep, rotation_id: str) -> RotationDetail:
    with runtime.db.read() as session:
        row = get_rotation(session, rotation_id)
        view = rotation_view(session, row)
        if row.approval_request_id:
            request = approvals.get_request(session, row.approval_request_id)
            view["approval"] = approvals.request_view(session, runtime.tags, request)
        return RotationDetail.model_validate(view)
