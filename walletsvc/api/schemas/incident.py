"""Response bodies of incident response: freezes, unfreeze requests, key rotations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel, Timestamp
from walletsvc.api.schemas.governance import ApprovalRequestView

_APPROVAL = "The approval request deciding it; absent when it has none."


class FreezeView(ResponseModel):
    id: str
    scope: Literal["all", "withdrawals", "deposits"]
    wallet: str | None
    reason: str
    source: str = Field(description="`manual` or `risk` (applied by a risk rule).")
    evidence: dict[str, Any]
    created_by: str
    created_at: Timestamp
    lifted_at: Timestamp | None


class FreezeState(ResponseModel):
    frozen: bool
    freezes: list[FreezeView]


class UnfreezeRequestView(ResponseModel):
    id: str
    status: str
    freeze_ids: list[str]
    reason: str
    requested_by: str
    approval_request_id: str | None
    created_at: Timestamp
    decided_at: Timestamp | None


class UnfreezeRequestDetail(UnfreezeRequestView):
    approval: ApprovalRequestView | None = Field(default=None, description=_APPROVAL)


class UnfreezeRequestList(ResponseModel):
    unfreeze_requests: list[UnfreezeRequestView]


class RotationView(ResponseModel):
    id: str
    wallet: str | None
    status: str
    reason: str
    from_epoch: int
    to_epoch: int | None
    new_xpub: str | None
    requested_by: str
    approval_request_id: str | None
    created_at: Timestamp
    rotated_at: Timestamp | None


class RotationDetail(RotationView):
    approval: ApprovalRequestView | None = Field(default=None, description=_APPROVAL)


class RotationSweep(ResponseModel):
    txid: str
    status: str
    amount_sat: int
    to: str


class WalletRotations(ResponseModel):
    """A wallet's rotation state: what an operator checks after a rotation."""

    wallet: str
    current_epoch: int
    current_address: str | None
    old_epoch_coins_left: int
    old_epoch_sat_left: int
    payouts_waiting_to_be_resigned: bool
    rotation_sweeps: list[RotationSweep]
    rotations: list[RotationView]
