"""Payout requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.schemas import WithdrawalCreate
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.payouts import intake
from walletsvc.payouts.intake import WithdrawalInput, cancel_withdrawal, request_withdrawal

router = APIRouter(tags=["withdrawals"])
Creator = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:create"))]
Reader = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:read"))]


@router.post("/withdrawals", status_code=201)
def create_withdrawal(
    body: WithdrawalCreate,
    runtime: RuntimeDep,
    principal: Creator,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    result = request_withdrawal(
        runtime.db,
        runtime.kek,
        body=WithdrawalInput(body.wallet, body.destination, body.amount_sat, body.reference),
        idempotency_key=idempotency_key or "",
        token_id=principal.token_id,
        actor=principal.actor,
    )
    view = intake.show_withdrawal(runtime.db, result.withdrawal_id)
    return JSONResponse(view, status_code=201 if result.created else 200)


@router.get("/withdrawals/{withdrawal_id}")
def show_withdrawal(withdrawal_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return intake.show_withdrawal(runtime.db, withdrawal_id)


@router.get("/withdrawals")
def index_withdrawals(
    runtime: RuntimeDep,
    _: Reader,
    status: str | None = None,
    wallet: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return intake.withdrawals_index(
        runtime.db, status=status, wallet=wallet, cursor=cursor, limit=limit
    )


@router.post("/withdrawals/{withdrawal_id}/cancel")
def cancel(withdrawal_id: str, runtime: RuntimeDep, principal: Creator) -> dict[str, Any]:
    cancel_withdrawal(runtime.db, withdrawal_id, actor=principal.actor)
    return intake.show_withdrawal(runtime.db, withdrawal_id)
