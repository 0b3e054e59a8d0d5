"""Emergency freeze: anyone on call (token scope `freeze`, or any staff member) may freeze."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Request

from walletsvc.api.deps import (
    ALL_ROLES,
    Principal,
    RuntimeDep,
    authenticate,
    authorize,
    require_access,
    runtime_of,
)
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel, Text
from walletsvc.api.schemas.incident import FreezeState, FreezeView
from walletsvc.domain.errors import InvalidInput
from walletsvc.incident.freeze import freeze, freeze_overview, show_freeze
from walletsvc.metrics import FREEZE_STAGE_SECONDS

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Freezing must never wait for permission: any staff member (every role) or a token with the
# `freeze` scope (checked in ``_freeze``). Lifting is governed (walletsvc.api.routes.unfreeze).
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


class FreezeRequest(StrictModel):
    reason: Prose
    # "wallet" (the contract's name for "everything of one wallet") is the same as "all"
    # with a wallet given.
    scope: Literal["all", "withdrawals", "deposits", "wallet"] = "all"
    wallet: Text | None = None


# A freeze has its own lane of worker threads. Sync routes and dependencies share one pool
# (settings.route_threads), and under a flood of payout requests every thread of it may be a
# request waiting for its wallet's lock: a freeze queued for a thread there would wait behind
# the very payouts it means to stop. Here it waits for nothing but the freeze gate
# (walletsvc.db.database), and its authentication runs in the lane too. The route is async
# and the middleware in front of it is plain ASGI, so nothing before the lane blocks.
FREEZE_LANE = anyio.CapacityLimiter(8)


@router.post("/freeze", status_code=201, responses=error_responses(404, 422))
async def post_freeze(body: FreezeRequest, request: Request) -> FreezeView:
    arrived = time.perf_counter()
    return await anyio.to_thread.run_sync(
        partial(_freeze, body, request, arrived), limiter=FREEZE_LANE
    )


def _freeze(body: FreezeRequest, request: Request, arrived: float) -> FreezeView:
    started = time.perf_counter()
    FREEZE_STAGE_SECONDS.labels("queued").observe(started - arrived)
    runtime = runtime_of(request)
    principal = authenticate(request, runtime)
    FREEZE_STAGE_SECONDS.labels("authenticate").observe(time.perf_counter() - started)
    authorize(principal, ("freeze",), ALL_ROLES)  # any staff member or the `freeze` scope
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
