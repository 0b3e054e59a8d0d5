"""Payout requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import WithdrawalCreate
from walletsvc.api.schemas.withdrawals import (
    FeeEstimate,
    WithdrawalPage,
    WithdrawalPreview,
    WithdrawalView,
)
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.payouts import intake
from walletsvc.payouts.fees import fee_estimate
from walletsvc.payouts.intake import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    WithdrawalInput,
    cancel_withdrawal,
    preview_withdrawal,
    request_withdrawal,
)

router = APIRouter(tags=["withdrawals"], responses=error_responses(401, 403))
Creator = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:create"))]
Reader = Annotated[TokenPrincipal, Depends(require_scope("withdrawals:read"))]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="Any string unique to this payout (per API token): repeating a request "
        "with the same key and body returns the original withdrawal (200).",
        examples=["round-812/miner-77"],
    ),
]


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
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    result = request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(body.wallet, body.destination, body.amount_sat, body.reference),
        idempotency_key=idempotency_key,
        token_id=principal.token_id,
        actor=principal.actor,
    )
    view = result.view or intake.show_withdrawal(runtime.db, result.withdrawal_id)
    # A response of its own for the 201/200 choice, so the model is applied here.
    return JSONResponse(
        WithdrawalView.model_validate(view).model_dump(mode="json"),
        status_code=201 if result.created else 200,
    )


@router.post(
    "/withdrawals/dry-run",
    responses=error_responses(404, 422, 423),
    summary="The policy decision a payout request would get now, creating nothing",
)
def dry_run(body: WithdrawalCreate, runtime: RuntimeDep, principal: Creator) -> WithdrawalPreview:
    preview = preview_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(body.wallet, body.destination, body.amount_sat, body.reference),
        token_id=principal.token_id,
    )
    return WithdrawalPreview.model_validate(preview)


@router.get("/fee-estimate", responses=error_responses(422, 503))
def get_fee_estimate(
    runtime: RuntimeDep,
    _: Reader,
    target_blocks: Annotated[int | None, Query(ge=1, le=1008)] = None,
) -> FeeEstimate:
    """The fee rate the signer would use now, and what a payout sent alone would pay."""
    return FeeEstimate.model_validate(fee_estimate(runtime.chain, runtime.settings, target_blocks))


@router.get("/withdrawals/{withdrawal_id}", responses=error_responses(404, 422))
def show_withdrawal(withdrawal_id: str, runtime: RuntimeDep, _: Reader) -> WithdrawalView:
    return WithdrawalView.model_validate(intake.show_withdrawal(runtime.db, withdrawal_id))


@router.get("/withdrawals", responses=error_responses(404, 422))
def index_withdrawals(
    runtime: RuntimeDep,
    _: Reader,
    status: str | None = None,
    wallet: str | None = None,
    reference: Annotated[
        str | None, Query(max_length=200, description="Only the payout(s) with this reference.")
    ] = None,
    updated_since: Annotated[
        datetime | None,
        Query(
            description="Polling: only payouts changed at or after this RFC 3339 time, oldest "
            "change first. Pass the largest `updated_at` seen so far."
        ),
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WithdrawalPage:
    """Newest first; with `updated_since`, oldest change first. `next_cursor` pages either."""
    return WithdrawalPage.model_validate(
        intake.withdrawals_index(
            runtime.db,
            status=status,
            wallet=wallet,
            cursor=cursor,
            limit=limit,
            reference=reference,
            updated_since=updated_since,
        )
    )


@router.post("/withdrawals/{withdrawal_id}/cancel", responses=error_responses(404, 409, 422))
def cancel(withdrawal_id: str, runtime: RuntimeDep, principal: Creator) -> WithdrawalView:
    cancel_withdrawal(runtime.db, withdrawal_id, actor=principal.actor)
    return WithdrawalView.model_validate(intake.show_withdrawal(runtime.db, withdrawal_id))
