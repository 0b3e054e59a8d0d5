"""Lifting a freeze: opens an approval request (kind ``unfreeze``); lifts only at quorum."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.schemas import StrictModel
from walletsvc.domain.errors import InvalidInput
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident import unfreeze
from walletsvc.incident.unfreeze import (
    Requester,
    Target,
    propose,
    unfreeze_index,
)

router = APIRouter(tags=["incident response"])
# Whoever may freeze may ask for the lift; the quorum of approvers decides. Auditors read.
Proposer = Annotated[
    Principal, Depends(require_access(scopes=("freeze",), roles=("approver", "operator")))
]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class UnfreezeBody(StrictModel):
    reason: StrictStr
    freeze_id: StrictStr | None = None
    scope: Literal["all", "withdrawals", "deposits", "wallet"] | None = None
    wallet: StrictStr | None = None


@router.post("/unfreeze", status_code=201)
def post_unfreeze(body: UnfreezeBody, runtime: RuntimeDep, principal: Proposer) -> dict[str, Any]:
    if body.freeze_id is not None and (body.scope is not None or body.wallet is not None):
        raise InvalidInput("give freeze_id, or scope and wallet, not both", field="freeze_id")
    if body.scope == "wallet" and not body.wallet:
        raise InvalidInput("scope 'wallet' needs the wallet", field="wallet")
    scope = "all" if body.scope == "wallet" else body.scope
    staff_id = principal.staff_id if isinstance(principal, StaffPrincipal) else None
    row = propose(
        runtime.db,
        runtime.kek,
        target=Target(freeze_id=body.freeze_id, scope=scope, wallet=body.wallet),
        reason=body.reason,
        requester=Requester(principal.actor, staff_id),
    )
    return _show(runtime, row.id)


@router.get("/unfreeze")
def index_unfreeze(runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return unfreeze_index(runtime.db)


@router.get("/unfreeze/{request_id}")
def show_unfreeze(request_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return _show(runtime, request_id)


def _show(runtime: RuntimeDep, request_id: str) -> dict[str, Any]:
    return unfreeze.show_unfreeze(runtime.db, runtime.kek, request_id)
