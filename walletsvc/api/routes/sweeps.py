"""Sweeps to cold storage and the (governed) cold destination of a wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from walletsvc.api.deps import Principal, RuntimeDep, SessionDep, require_access, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.treasury import (
    ColdDestinationChangeView,
    ColdDestinationState,
    SweepList,
    SweepView,
)
from walletsvc.db.models import ChainTransaction
from walletsvc.db.models_treasury import ColdDestinationChange
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.treasury.cold import change_view, cold_view, request_cold_destination_change
from walletsvc.treasury.sweeps import list_sweeps, sweep_view
from walletsvc.wallets.service import get_wallet

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

    descriptor: str = Field(min_length=1, max_length=4000)
    reason: str | None = Field(default=None, max_length=500)


@router.get("/sweeps", responses=error_responses(404, 422))
def sweeps(
    session: SessionDep,
    _: SweepReader,
    wallet: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SweepList:
    if wallet is not None:
        get_wallet(session, wallet)  # 404 for an unknown wallet, not an empty list
    return SweepList.model_validate({"sweeps": list_sweeps(session, wallet=wallet, limit=limit)})


@router.post(
    "/wallets/{wallet}/sweeps",
    status_code=201,
    responses=error_responses(404, 409, 422, 502, 503),
)
def force_sweep(wallet: str, runtime: RuntimeDep, principal: SweepWriter) -> SweepView:
    row = runtime.sweeper.force(wallet, actor=principal.actor)
    runtime.worker.broadcast_signed()  # only after the signed sweep is committed
    with runtime.db.read() as session:
        tx = session.get(ChainTransaction, row.transaction_id)
        assert tx is not None
        return SweepView.model_validate({**sweep_view(row, tx), "wallet": wallet})


@router.get("/wallets/{wallet}/cold-destination", responses=error_responses(404, 422))
def show_cold_destination(wallet: str, session: SessionDep, _: SweepReader) -> ColdDestinationState:
    row = get_wallet(session, wallet)
    changes = session.scalars(
        select(ColdDestinationChange)
        .where(ColdDestinationChange.wallet_id == row.id)
        .order_by(ColdDestinationChange.created_at.desc())
        .limit(20)
    )
    return ColdDestinationState.model_validate(
        {"current": cold_view(session, row), "changes": [change_view(c) for c in changes]}
    )


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
