"""Sweeps to cold storage and the (governed) cold destination of a wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from walletsvc.api.deps import Principal, RuntimeDep, require_access, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, Text
from walletsvc.api.schemas.treasury import (
    ColdDestinationChangeView,
    ColdDestinationState,
    SweepList,
    SweepView,
)
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.treasury.cold import (
    change_view,
    cold_destination_overview,
    request_cold_destination_change,
)
from walletsvc.treasury.sweeps import show_sweep, sweeps_index

router = APIRouter(tags=["sweeps"], responses=error_responses(401, 403))
SweepReader = Annotated[Principal, Depends(require_scope("sweeps:read"))]
# Forcing a sweep only moves hot funds to the approved cold destination: an operator may do
# it, and so may a token holding the dedicated scope (automation, the on-call runbook).
SweepWriter = Annotated[
    Principal, Depends(require_access(scopes=("sweeps:write",), roles=("operator",)))
]
# Proposing a new cold destination opens an approval request; only staff may propose.
ColdProposer = Annotated[Principal, Depends(require_access(roles=("operator", "approver")))]


class ColdDestinationProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    descriptor: Text = Field(min_length=1, max_length=4000)
    reason: Prose | None = Field(default=None, max_length=500)


@router.get("/sweeps", responses=error_responses(404, 422))
def sweeps(
    runtime: RuntimeDep,
    _: SweepReader,
    wallet: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SweepList:
    return SweepList.model_validate(sweeps_index(runtime.db, wallet=wallet, limit=limit))


@router.post(
    "/wallets/{wallet}/sweeps",
    status_code=201,
    responses=error_responses(404, 409, 422, 502, 503),
)
def force_sweep(wallet: str, runtime: RuntimeDep, principal: SweepWriter) -> SweepView:
    row = runtime.sweeper.force(wallet, actor=principal.actor)
    runtime.worker.broadcast_signed()  # only after the signed sweep is committed
    return SweepView.model_validate(show_sweep(runtime.db, row, wallet))


@router.get("/wallets/{wallet}/cold-destination", responses=error_responses(404, 422))
def show_cold_destination(wallet: str, runtime: RuntimeDep, _: SweepReader) -> ColdDestinationState:
    return ColdDestinationState.model_validate(cold_destination_overview(runtime.db, wallet))


@router.post(
    "/wallets/{wallet}/cold-destination",
    status_code=202,
    responses=error_responses(404, 409, 422),
)
def propose_cold_destination(
    wallet: str, body: ColdDestinationProposal, runtime: RuntimeDep, principal: ColdProposer
) -> ColdDestinationChangeView:
    staff_id = principal.staff_id if isinstance(principal, StaffPrincipal) else None
    change = request_cold_destination_change(
        runtime.db,
        runtime.tags,
        wallet=wallet,
        text=body.descriptor,
        reason=body.reason,
        requester=principal.actor,
        requester_staff_id=staff_id,
    )
    return ColdDestinationChangeView.model_validate(change_view(change))
