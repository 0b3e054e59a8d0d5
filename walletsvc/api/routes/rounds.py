"""Payout rounds: many payouts under one Idempotency-Key, decided as a whole."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.rounds import PayoutRoundCreate, PayoutRoundPage, PayoutRoundView
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.payouts import rounds
from walletsvc.payouts.rounds import RoundInput, RoundPayoutInput

router = APIRouter(tags=["payout rounds"], responses=error_responses(401, 403))
Creator = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:create"))]
Reader = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:read"))]


@router.post(
    "/payout-rounds",
    status_code=201,
    response_model=PayoutRoundView,
    responses={
        200: {"model": PayoutRoundView, "description": "The same key and body again: a replay"},
        **error_responses(404, 409, 422, 423),
    },
)
def create_round(
    body: PayoutRoundCreate,
    runtime: RuntimeDep,
    principal: Creator,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    result = rounds.request_round(
        runtime.db,
        runtime.tags,
        body=RoundInput(
            wallet=body.wallet,
            reference=body.reference,
            payouts=tuple(
                RoundPayoutInput(p.destination, p.amount_sat, p.reference) for p in body.payouts
            ),
        ),
        idempotency_key=idempotency_key or "",
        token_id=principal.token_id,
        actor=principal.actor,
    )
    view = rounds.show_round(runtime.db, result.round_id)
    return JSONResponse(
        PayoutRoundView.model_validate(view).model_dump(mode="json"),
        status_code=201 if result.created else 200,
    )


@router.get("/payout-rounds/{round_id}", responses=error_responses(404, 422))
def show_round(round_id: str, runtime: RuntimeDep, _: Reader) -> PayoutRoundView:
    return PayoutRoundView.model_validate(rounds.show_round(runtime.db, round_id))


@router.get("/payout-rounds", responses=error_responses(404, 422))
def index_rounds(
    runtime: RuntimeDep,
    _: Reader,
    wallet: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PayoutRoundPage:
    return PayoutRoundPage.model_validate(
        rounds.rounds_index(runtime.db, wallet=wallet, cursor=cursor, limit=limit)
    )
