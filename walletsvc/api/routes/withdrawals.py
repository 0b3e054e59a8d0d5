"""Payout requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import WithdrawalCreate
from walletsvc.api.schemas.withdrawals import WithdrawalPage, WithdrawalView
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.payouts import intake
from walletsvc.payouts.intake import WithdrawalInput, cancel_withdrawal, request_withdrawal

router = APIRouter(tags=["withdrawals"], responses=error_responses(401, 403))
Creator = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:create"))]
Reader = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:read"))]


@router.post(
    "/withdrawals",
    status_code=201,
    response_model=WithdrawalView,
    responses={
        200: {"model": WithdrawalView, "description": "The same key and body again: a replay"},
        **error_responses(404, 409, 422, 423),
    },
)
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
    view = intake.show_withdrawal(runtime.db, result.withdrawal_id)
    # A response of its own for the 201/200 choice, so the model is applied here.
    return JSONResponse(
        WithdrawalView.model_validate(view).model_dump(mode="json"),
        status_code=201 if result.created else 200,
    )


@router.get("/withdrawals/{withdrawal_id}", responses=error_responses(404, 422))
def show_withdrawal(withdrawal_id: str, runtime: RuntimeDep, _: Reader) -> WithdrawalView:
    return WithdrawalView.model_validate(intake.show_withdrawal(runtime.db, withdrawal_id))


@router.get("/withdrawals", responses=error_responses(404, 422))
def index_withdrawals(
    runtime: RuntimeDep,
    _: Reader,
    status: str | None = None,
    wallet: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WithdrawalPage:
    return WithdrawalPage.model_validate(
        intake.withdrawals_index(
            runtime.db, status=status, wallet=wallet, cursor=cursor, limit=limit
        )
    )


@router.post("/withdrawals/{withdrawal_id}/cancel", responses=error_responses(404, 409, 422))
def cancel(withdrawal_id: str, runtime: RuntimeDep, principal: Creator) -> WithdrawalView:
    cancel_withdrawal(runtime.db, withdrawal_id, actor=principal.actor)
    return WithdrawalView.model_validate(intake.show_withdrawal(runtime.db, withdrawal_id))
