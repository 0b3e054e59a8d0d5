"""The theft shield's reports: every theft caught in the mempool and how its race ended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.incident import ShieldIncidentList
from walletsvc.incident.shield import shield_incidents

router = APIRouter(tags=["incident response"], responses=error_responses(401, 403))
# Operators and auditors read the outcome (saved, lost, fees) as they read freezes.
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]


@router.get("/shield/incidents", responses=error_responses(404, 422))
def incidents(
    runtime: RuntimeDep,
    _: Reader,
    wallet: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ShieldIncidentList:
    return ShieldIncidentList.model_validate(
        shield_incidents(runtime.db, wallet=wallet, limit=limit)
    )
