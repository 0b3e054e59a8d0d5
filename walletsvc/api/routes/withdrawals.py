"""Payout requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from walletsvc.api.deps import RuntimeDep, SessionDep, require_scope
from walletsvc.api.schemas import WithdrawalCreate
from walletsvc.domain.errors import InvalidInput
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.payouts.intake import (
    WithdrawalInput,
    cancel_withdrawal,
    get_withdrawal,
    list_withdrawals,
    request_withdrawal,
    withdrawal_view,
)

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
        runtime.tags,
        body=WithdrawalInput(body.wallet, body.destination, body.amount_sat, body.reference),
        idempotency_key=idempotency_key or "",
        token_id=principal.token_id,
        actor=principal.actor,
    )
    with runtime.db.read() as session:
        view = withdrawal_view(session, get_withdrawal(session, result.withdrawal_id))
    return JSONResponse(view, status_code=201 if result.created else 200)


@router.get("/withdrawals/{withdrawal_id}")
def show_withdrawal(withdrawal_id: str, session: SessionDep, _: Reader) -> dict[str, Any]:
    return withdrawal_view(session, get_withdrawal(session, withdrawal_id))


@router.get("/withdrawals")
def index_withdrawals(
    session: SessionDep,
    _: Reader,
    status: str | None = None,
    wallet: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    if status is not None and status not in {s.value for s in WithdrawalStatus}:
        raise InvalidInput(f"unknown status {status!r}", field="status")
    rows, next_cursor = list_withdrawals(
        session, status=status, wallet=wallet, cursor=cursor, limit=limit
    )
    return {
        "withdrawals": [withdrawal_view(session, r) for r in rows],
        "next_cursor": next_cursor,
    }


@router.post("/withdrawals/{withdrawal_id}/cancel")
def cancel(withdrawal_id: str, runtime: RuntimeDep, principal: Creator) -> dict[str, Any]:
    cancel_withdrawal(runtime.db, withdrawal_id, actor=principal.actor)
    with runtime.db.read() as session:
        return withdrawal_view(session, get_withdrawal(session, withdrawal_id))
