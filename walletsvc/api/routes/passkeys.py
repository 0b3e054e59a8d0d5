"""A staff member's own passkeys: list them, remove one. Registering one happens in the
console (the browser's WebAuthn call), see docs/console.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from walletsvc.api.deps import RuntimeDep, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.governance import PasskeyList
from walletsvc.governance.passkeys import PasskeyInfo, my_passkeys, remove_passkey
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["sessions"], responses=error_responses(401, 403))
AnyStaff = Annotated[StaffPrincipal, Depends(require_staff())]


def _view(info: PasskeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "label": info.label,
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
    }


@router.get("/passkeys")
def list_my_passkeys(runtime: RuntimeDep, staff: AnyStaff) -> PasskeyList:
    """The caller's passkeys that may approve."""
    listed = my_passkeys(runtime.db, runtime.tags, staff)
    return PasskeyList.model_validate({"passkeys": [_view(p) for p in listed]})


@router.delete(
    "/passkeys/{passkey_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 422),
)
def delete_my_passkey(passkey_id: str, runtime: RuntimeDep, staff: AnyStaff) -> Response:
    """Remove one of the caller's own passkeys: it approves nothing from now on (audited)."""
    remove_passkey(runtime.db, runtime.tags, runtime.signer, staff, passkey_id=passkey_id)
    return Response(status_code=204)
