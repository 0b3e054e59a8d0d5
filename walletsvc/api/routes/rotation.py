"""Key rotation: opens an approval request (kind ``key_rotation``); rotates at quorum."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel
from walletsvc.api.schemas.incident import RotationDetail, WalletRotations
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident import rotation
from walletsvc.incident.unfreeze import Requester

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Staff only: a rotation replaces the wallet's keys; approvers decide it at quorum.
Proposer = Annotated[StaffPrincipal, Depends(require_staff("approver", "operator"))]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class RotateBody(StrictModel):
    reason: Prose


@router.post(
    "/wallets/{wallet}/rotate",
    status_code=201,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def post_rotate(
    wallet: str, body: RotateBody, runtime: RuntimeDep, staff: Proposer
) -> RotationDetail:
    row = rotation.propose(
        runtime.db,
        runtime.tags,
        wallet=wallet,
        reason=body.reason,
        requester=Requester(staff.actor, staff.staff_id),
    )
    return _show(runtime, row.id)


@router.get("/wallets/{wallet}/rotations", responses=error_responses(404, 422))
def index_rotations(wallet: str, runtime: RuntimeDep, _: Reader) -> WalletRotations:
    return WalletRotations.model_validate(rotation.rotations_index(runtime.db, wallet))


@router.get(
    "/rotations/{rotation_id}",
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def show_rotation(rotation_id: str, runtime: RuntimeDep, _: Reader) -> RotationDetail:
    return _show(runtime, rotation_id)


def _show(runtime: RuntimeDep, rotation_id: str) -> RotationDetail:
    return RotationDetail.model_validate(
        rotation.show_rotation(runtime.db, runtime.tags, rotation_id)
    )
