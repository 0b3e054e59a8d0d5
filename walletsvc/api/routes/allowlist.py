"""The allowlist: staff propose treasury destinations, the payout engine miner addresses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.schemas import StrictModel
from walletsvc.governance import allowlist
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["allowlist"])
Reader = Annotated[
    Principal, Depends(require_access(scopes=("read", "allowlist:propose"), roles=ALL_ROLES))
]
Writer = Annotated[
    Principal,
    Depends(require_access(scopes=("allowlist:propose",), roles=("approver", "operator"))),
]


class AllowlistCreate(StrictModel):
    wallet: StrictStr
    address: StrictStr
    label: StrictStr | None = None


def _show(runtime: RuntimeDep, entry_id: str) -> dict[str, Any]:
    return allowlist.show_entry(runtime.db, runtime.kek, entry_id)


@router.post("/allowlist", status_code=201)
def propose(body: AllowlistCreate, runtime: RuntimeDep, principal: Writer) -> dict[str, Any]:
    staff_id = principal.staff_id if isinstance(principal, StaffPrincipal) else None
    entry_id = allowlist.propose_entry(
        runtime.db,
        runtime.kek,
        wallet=body.wallet,
        address=body.address,
        label=body.label,
        proposer=allowlist.Proposer(principal.actor, staff_id),
    )
    return _show(runtime, entry_id)


@router.get("/allowlist")
def index(
    runtime: RuntimeDep,
    _: Reader,
    wallet: str | None = None,
    include_removed: bool = False,
) -> dict[str, Any]:
    return allowlist.list_allowlist(
        runtime.db, runtime.kek, wallet=wallet, include_removed=include_removed
    )


@router.get("/allowlist/{entry_id}")
def show(entry_id: str, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return _show(runtime, entry_id)


@router.delete("/allowlist/{entry_id}", status_code=204)
def remove(entry_id: str, runtime: RuntimeDep, principal: Writer) -> Response:
    allowlist.remove_entry(runtime.db, runtime.kek, entry_id=entry_id, actor=principal.actor)
    return Response(status_code=204)
