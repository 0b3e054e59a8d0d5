"""The allowlist: staff propose treasury destinations, the payout engine miner addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import StrictModel, Text
from walletsvc.api.schemas.governance import AllowlistEntryList, AllowlistEntryView
from walletsvc.governance import allowlist
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["allowlist"], responses=error_responses(401, 403))
Reader = Annotated[
    Principal, Depends(require_access(scopes=("read", "allowlist:propose"), roles=ALL_ROLES))
]
Writer = Annotated[
    Principal,
    Depends(require_access(scopes=("allowlist:propose",), roles=("approver", "operator"))),
]


class AllowlistCreate(StrictModel):
    wallet: Text
    address: Text
    label: Text | None = None


def _show(runtime: RuntimeDep, entry_id: str) -> AllowlistEntryView:
    return AllowlistEntryView.model_validate(
        allowlist.show_entry(runtime.db, runtime.tags, entry_id)
    )


@router.post("/allowlist", status_code=201, responses=error_responses(404, 409, 422))
def propose(body: AllowlistCreate, runtime: RuntimeDep, principal: Writer) -> AllowlistEntryView:
    staff_id = principal.staff_id if isinstance(principal, StaffPrincipal) else None
    entry_id = allowlist.propose_entry(
        runtime.db,
        runtime.tags,
        wallet=body.wallet,
        address=body.address,
        label=body.label,
        proposer=allowlist.Proposer(principal.actor, staff_id),
    )
    return _show(runtime, entry_id)


@router.get("/allowlist", responses=error_responses(404, 422))
def index(
    runtime: RuntimeDep,
    _: Reader,
    wallet: str | None = None,
    include_removed: bool = False,
) -> AllowlistEntryList:
    return AllowlistEntryList.model_validate(
        allowlist.list_allowlist(
            runtime.db, runtime.tags, wallet=wallet, include_removed=include_removed
        )
    )


@router.get("/allowlist/{entry_id}", responses=error_responses(404, 422))
def show(entry_id: str, runtime: RuntimeDep, _: Reader) -> AllowlistEntryView:
    return _show(runtime, entry_id)


@router.delete("/allowlist/{entry_id}", status_code=204, responses=error_responses(404, 409, 422))
def remove(entry_id: str, runtime: RuntimeDep, principal: Writer) -> Response:
    allowlist.remove_entry(
        runtime.db, runtime.tags, runtime.signer, entry_id=entry_id, actor=principal.actor
    )
    return Response(status_code=204)
