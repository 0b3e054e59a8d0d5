"""Lifting a freeze: opens an approval request (kind ``unfreeze``); lifts only at quorum."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel, Text
from walletsvc.api.schemas.incident import UnfreezeRequestDetail, UnfreezeRequestList
from walletsvc.domain.errors import InvalidInput
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.incident import unfreeze
from walletsvc.incident.unfreeze import (
    Requester,
    Target,
    propose,
    unfreeze_index,
)

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Whoever may freeze may ask for the lift; the quorum of approvers decides. Auditors read.
Proposer = Annotated[
    Principal, Depends(require_access(scopes=("freeze",), roles=("approver", "operator")))
]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class UnfreezeBody(StrictModel):
    reason: Prose
    freeze_id: Text | None = None
    scope: Literal["all", "withdrawals", "deposits", "wallet"] | None = None
    wallet: Text | None = None


@router.post(
    "/unfreeze",
    status_code=201,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def post_unfreeze(
    body: UnfreezeBody, runtime: RuntimeDep, principal: Proposer
) -> UnfreezeRequestDetail:
    if body.freeze_id is not None and (body.scope is not None or body.wallet is not None):
        raise InvalidInput("give freeze_id, or scope and wallet, not both", field="freeze_id")
    if body.scope == "wallet" and not body.wallet:
        raise InvalidInput("scope 'wallet' needs the wallet", field="wallet")
    scope = "all" if body.scope == "wallet" else body.scope
    staff_id = principal.staff_id if isinstance(principal, StaffPrincipal) else None
    row = propose(
        runtime.db,
        runtime.tags,
        target=Target(freeze_id=body.freeze_id, scope=scope, wallet=body.wallet),
        reason=body.reason,
        requester=Requester(principal.actor, staff_id),
    )
    return _show(runtime, row.id)


@router.get("/unfreeze")
def index_unfreeze(runtime: RuntimeDep, _: Reader) -> UnfreezeRequestList:
    return UnfreezeRequestList.model_validate(unfreeze_index(runtime.db))


@router.get(
    "/unfreeze/{request_id}", response_model_exclude_unset=True, responses=error_responses(404, 422)
)
def show_unfreeze(request_id: str, runtime: RuntimeDep, _: Reader) -> UnfreezeRequestDetail:
    return _show(runtime, request_id)


def _show(runtime: RuntimeDep, request_id: str) -> UnfreezeRequestDetail:
    return UnfreezeRequestDetail.model_validate(
        unfreeze.show_unfreeze(runtime.db, runtime.tags, request_id)
    )
