"""Response bodies of the treasury: sweeps and the cold destination."""

from __future__ import annotations

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel, Timestamp


class ColdDestinationSummary(ResponseModel):
    kind: str = Field(description="`wpkh` or `wsh-sortedmulti`.")
    fingerprint: str
    next_index: int


class ColdDestinationChangeView(ResponseModel):
    id: str
    kind: str
    fingerprint: str
    descriptor: str
    reason: str | None
    status: str
    requested_by: str
    approval_request_id: str | None
    created_at: Timestamp
    decided_at: Timestamp | None


class ColdDestinationState(ResponseModel):
    current: ColdDestinationSummary | None
    changes: list[ColdDestinationChangeView]


class SweepView(ResponseModel):
    id: str
    wallet_id: str
    txid: str
    status: str
    trigger: str = Field(description="`ceiling`, `forced` or `rotation`.")
    address: str
    cold_index: int
    amount_sat: int
    kept_sat: int = Field(description="What stays hot (change).")
    fee_sat: int
    requested_by: str
    created_at: Timestamp | None
    wallet: str


class SweepList(ResponseModel):
    sweeps: list[SweepView]


class RefillView(ResponseModel):
    id: str
    wallet: str
    status: str = Field(
        description="`awaiting_signatures`, `signed` (complete, broadcast pending or refused "
        "by the node), `broadcast`, `confirmed` or `cancelled`."
    )
    complete: bool = Field(description="Every input has its signatures and the kernel agreed.")
    signatures: list[int] = Field(description="Signatures collected so far, per input.")
    cold_kind: str | None = Field(description="`wpkh` or `wsh-sortedmulti`.")
    txid: str
    amount_sat: int = Field(description="Paid to the hot wallet.")
    fee_sat: int
    change_sat: int = Field(description="Back to the next cold address (0: no change).")
    hot_address: str
    inputs: list[str] = Field(description="The cold coins spent, as `txid:vout`.")
    cold_balance_sat: int = Field(description="Confirmed, unspent cold coins of the wallet.")
    psbt: str = Field(description="BIP174, base64: the proposal with every signature so far.")
    requested_by: str
    created_at: Timestamp | None
    completed_at: Timestamp | None
