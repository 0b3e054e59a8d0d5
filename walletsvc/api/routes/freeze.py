"""Emergency freeze: anyone on call (token scope `freeze`, or any staff member) may freeze."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel, Text
from walletsvc.api.schemas.incident import FreezeState, FreezeView
from walletsvc.domain.errors import InvalidInput
from walletsvc.incident.freeze import freeze, freeze_overview, show_freeze

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Freezing must never wait for permission: any staff member (every role) or a token with the
# `freeze` scope. Lifting is governed (walletsvc.api.routes.unfreeze).
Freezer = Annotated[Principal, Depends(require_access(scopes=("freeze",), roles=ALL_ROLES))]
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class FreezeRequest(StrictModel):
    reason: Prose
    # "wallet" (the contract's name for "everything of one wallet") is the same as "all"
    # with a wallet given.
    scope: Literal["all", "withdrawals", "deposits", "wallet"] = "all"
    wallet: Text | None = None


@router.post("/freeze", status_code=201, responses=error_responses(404, 422))
def post_freeze(body: FreezeRequest, runtime: RuntimeDep, principal: Freezer) -> FreezeView:
    if body.scope == "wallet" and not body.wallet:
        raise InvalidInput("scope 'wallet' needs the wallet to freeze", field="wallet")
    scope = "all" if body.scope == "wallet" else body.scope
    row = freeze(
        runtime.db,
        scope=scope,
        wallet=body.wallet,
        reason=body.reason,
        actor=principal.actor,
        signer=runtime.signer,
    )
    return FreezeView.model_validate(show_freeze(runtime.db, row))


@router.get("/freeze")
def get_freeze(runtime: RuntimeDep, _: Reader) -> FreezeState:
    return FreezeState.model_validate(freeze_overview(runtime.db))
