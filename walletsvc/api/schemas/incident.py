"""Response bodies of incident response: freezes, unfreeze requests, key rotations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel, Timestamp
from walletsvc.api.schemas.governance import ApprovalRequestView

_APPROVAL = "The approval request deciding it; absent when it has none."
_ONCE_ROTATED = "Present once rotated: the wallet's old-epoch coins now, as in its rotations."


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


class HeldPayout(ResponseModel):
    """A payout a freeze holds: it leaves when the freeze lifts, unless cancelled first."""

    id: str
    wallet: str | None
    status: Literal["approved", "signed"]
    destination: str
    amount_sat: int
    reference: str | None
    created_at: Timestamp


_HELD = (
    "Payouts approved (or signed) and held by these freezes: they leave when the freezes "
    "lift. Cancel an approved one you do not want (POST /v1/withdrawals/{id}/cancel) "
    "before approving the lift; a signed one is in a stored transaction already."
)


class FreezeState(ResponseModel):
    frozen: bool
    freezes: list[FreezeView]
    held_payouts: list[HeldPayout] = Field(description=_HELD)


class UnfreezeRequestView(ResponseModel):
    id: str
    status: str
    freeze_ids: list[str]
    held_payouts: list[HeldPayout] = Field(
        description=_HELD + " Listed while the request is pending (empty once decided)."
    )
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


class ImmatureCoin(ResponseModel):
    """An old-epoch coinbase not yet spendable: swept to cold at ``matures_at_height``."""

    txid: str
    vout: int
    amount_sat: int
    matures_at_height: int = Field(
        description="The chain height at which it has 100 confirmations: the rotation pass "
        "at that height sweeps it to cold, and the sweep can be mined in the next block."
    )


class RotationDetail(RotationView):
    approval: ApprovalRequestView | None = Field(default=None, description=_APPROVAL)
    # Once rotated: what the wallet's retired keys hold now (as in WalletRotations).
    old_epoch_coins_left: int | None = Field(default=None, description=_ONCE_ROTATED)
    old_epoch_sat_left: int | None = Field(default=None, description=_ONCE_ROTATED)
    old_epoch_immature_coins_left: int | None = Field(default=None, description=_ONCE_ROTATED)
    old_epoch_immature_sat_left: int | None = Field(default=None, description=_ONCE_ROTATED)
    old_epoch_immature_coins: list[ImmatureCoin] | None = Field(
        default=None, description=_ONCE_ROTATED
    )


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
    old_epoch_coins_left: int = Field(
        description="Spendable (confirmed, mature) old-epoch coins not yet swept to cold."
    )
    old_epoch_sat_left: int
    old_epoch_immature_coins_left: int = Field(
        description="Old-epoch coinbases not yet mature: still on the old key, swept to cold "
        "as each matures. Unfreeze only when this and `old_epoch_coins_left` are 0."
    )
    old_epoch_immature_sat_left: int
    old_epoch_immature_coins: list[ImmatureCoin] = Field(
        description="Each immature old-epoch coinbase, soonest maturity first."
    )
    payouts_waiting_to_be_resigned: bool
    rotation_sweeps: list[RotationSweep]
    rotations: list[RotationView]


class ShieldRoundView(ResponseModel):
    """One thief transaction seen in the mempool and the shield's answer to it."""

    number: int
    thief_txid: str
    thief_fee_sat: int
    thief_vsize: int
    evicted_fees_sat: int = Field(
        description="The thief's fee plus its mempool descendants': what the answer outbid."
    )
    outcome: Literal["answered", "cap_reached", "failed"]
    answer_txid: str | None
    answer_fee_sat: int | None
    answer_rate: int | None = Field(description="sat/vB of the answer.")
    answered_in_ms: int | None = Field(
        description="From the node's notification to the answer signed and stored."
    )
    detail: str


class ShieldIncidentView(ResponseModel):
    """A theft caught in the mempool and how the race to cold storage ended."""

    id: str
    wallet: str | None
    status: Literal["racing", "saved", "lost"]
    first_theft_txid: str
    stolen: list[str] = Field(description="`txid:vout` of our coins the thief spent.")
    stolen_sat: int
    max_fee_sat: int = Field(description="The policy's fee budget for this incident.")
    cap_reached: bool
    freeze_id: str | None
    saved_sat: int = Field(description="What reached cold storage (status `saved`).")
    lost_sat: int = Field(description="What the thief's mined transaction took (`lost`).")
    fees_spent_sat: int = Field(description="The fee of our answer that was mined.")
    resolved_txid: str | None
    resolved_height: int | None
    evidence: dict[str, Any]
    created_at: Timestamp
    resolved_at: Timestamp | None
    rounds: list[ShieldRoundView]


class ShieldIncidentList(ResponseModel):
    incidents: list[ShieldIncidentView]
