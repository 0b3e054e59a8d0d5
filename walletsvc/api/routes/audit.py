"""The hash-chained audit log, page by page (auditors, operators, tokens with `read`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import Principal, RuntimeDep, require_access
from walletsvc.governance.audit import audit_page

router = APIRouter(tags=["audit"])
Reader = Annotated[
    Principal, Depends(require_access(scopes=("read",), roles=("auditor", "operator")))
]


@router.get("/audit")
def index(
    runtime: RuntimeDep,
    _: Reader,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return audit_page(runtime.db, after=after, limit=limit)
