"""Key rotation: opens an approval request (kind ``key_rotation``); rotates at quorum."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.schemas import StrictModel
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident import rotation
from walletsvc.incident.unfreeze import Requester

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
    row = rotation.propose(
        runtime.db,
        runtime.kek,
        wallet=wallet,
        reason=body.reason,
        requester=Requester(staff.actor, staff.staff_id),
    )
    return _show(runtime, row.id)


@router.get("/wallets/{wallet}/rotations")
def index_rotations(wallet: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return rotation.rotations_index(runtime.db, wallet)


@router.get("/rotations/{rotation_id}")
def show_rotation(rotation_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return _show(runtime, rotation_id)


def _show(runtime: RuntimeDep, rotation_id: str) -> dict[str, Any]:
    return rotation.show_rotation(runtime.db, runtime.kek, rotation_id)
