"""The hash-chained audit log, page by page (auditors, operators, tokens with `read`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import MAX_SEQUENCE
from walletsvc.api.schemas.governance import AuditPage
from walletsvc.governance.audit import audit_page

router = APIRouter(tags=["audit"], responses=error_responses(401, 403))
Reader = Annotated[
    Principal, Depends(require_access(scopes=("read",), roles=("auditor", "operator")))
]


@router.get("/audit", responses=error_responses(422))
def index(
    runtime: RuntimeDep,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    return AuditPage.model_validate(audit_page(runtime.db, after=after, limit=limit))
