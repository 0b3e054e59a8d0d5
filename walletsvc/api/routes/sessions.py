"""Staff login: username + password + TOTP -> a short-lived session token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import StrictStr

from walletsvc.api.deps import RuntimeDep, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import StrictModel, Text
from walletsvc.api.schemas.governance import SessionCreated
from walletsvc.governance.sessions import end_session, login
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["sessions"])
AnyStaff = Annotated[StaffPrincipal, Depends(require_staff())]


class SessionCreate(StrictModel):
    username: Text
    password: StrictStr
    totp: Text


@router.post("/sessions", status_code=201, responses=error_responses(401, 403, 422, 429))
def create_session(body: SessionCreate, request: Request, runtime: RuntimeDep) -> SessionCreated:
    created = login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username=body.username,
        password=body.password,
        totp=body.totp,
        client=request.client.host if request.client else "unknown",
        throttle=runtime.login_throttle,
    )
    staff = created.principal
    return SessionCreated.model_validate(
        {
            "token": created.token,  # the one time it is shown
            "expires_at": created.expires_at.isoformat(),
            "staff": {
                "username": staff.username,
                "role": staff.role,
                "groups": sorted(staff.groups),
            },
        }
    )


@router.delete("/sessions/current", status_code=204, responses=error_responses(401, 403))
def delete_session(runtime: RuntimeDep, staff: AnyStaff) -> Response:
    end_session(runtime.db, staff)
    return Response(status_code=204)
