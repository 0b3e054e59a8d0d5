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
