"""Refills from cold storage: propose a PSBT, collect signed PSBTs, broadcast when complete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from walletsvc.api.deps import Principal, RuntimeDep, require_access, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.treasury import RefillView

router = APIRouter(tags=["refills"], responses=error_responses(401, 403))
RefillReader = Annotated[Principal, Depends(require_scope("sweeps:read"))]
# Like forcing a sweep: proposing a refill moves nothing (the cold keys' holders sign it
# offline), so an operator may do it, and so may a token with the sweeps scope. Signed PSBTs
# may also come from approvers: they are often the ones holding the hardware wallets.
RefillProposer = Annotated[
    Principal, Depends(require_access(scopes=("sweeps:write",), roles=("operator",)))
]
RefillSigner = Annotated[
    Principal,
    Depends(require_access(scopes=("sweeps:write",), roles=("operator", "approver"))),
]


class SignedPsbt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psbt: str = Field(
        min_length=1,
        max_length=6_000_000,
        description="A BIP174 PSBT in base64, as a hardware wallet or HWI returns it.",
    )


@router.post(
    "/wallets/{wallet}/refills",
    status_code=201,
    responses=error_responses(404, 409, 422),
)
def propose_refill(wallet: str, runtime: RuntimeDep, principal: RefillProposer) -> RefillView:
    """A PSBT bringing the hot wallet from below its floor back to its target."""
    return RefillView.model_validate(runtime.refills.propose(wallet, actor=principal.actor))


@router.get("/refills/{refill_id}", responses=error_responses(404, 422))
def show_refill(refill_id: str, runtime: RuntimeDep, _: RefillReader) -> RefillView:
    return RefillView.model_validate(runtime.refills.show(refill_id))


@router.post(
    "/refills/{refill_id}/signatures",
    responses=error_responses(404, 409, 422),
)
def add_refill_signatures(
    refill_id: str, body: SignedPsbt, runtime: RuntimeDep, principal: RefillSigner
) -> RefillView:
    """Add a signed PSBT; when every input is signed: finalize, verify, broadcast."""
    view = runtime.refills.add_signatures(refill_id, body.psbt, actor=principal.actor)
    return RefillView.model_validate(view)


@router.post("/refills/{refill_id}/cancel", responses=error_responses(404, 409, 422))
def cancel_refill(refill_id: str, runtime: RuntimeDep, principal: RefillProposer) -> RefillView:
    """Give up a refill still waiting for signatures; its cold coins are offered again."""
    return RefillView.model_validate(runtime.refills.cancel(refill_id, actor=principal.actor))
