"""Payout rounds: the request body (strict, like every request body) and the responses."""

from __future__ import annotations

from pydantic import Field, StrictInt

from walletsvc.api.schemas import StrictModel, Text
from walletsvc.api.schemas.base import ResponseModel, Timestamp
from walletsvc.api.schemas.withdrawals import RuleResultView, Status
from walletsvc.payouts.rounds import MAX_ROUND_PAYOUTS


class RoundPayoutCreate(StrictModel):
    destination: Text
    amount_sat: StrictInt
    reference: Text | None = None


class PayoutRoundCreate(StrictModel):
    wallet: Text
    reference: Text | None = None
    payouts: list[RoundPayoutCreate] = Field(min_length=1, max_length=MAX_ROUND_PAYOUTS)


class RoundPayoutView(ResponseModel):
    id: str = Field(description="The withdrawal's id: `GET /v1/withdrawals/{id}` shows it all.")
    index: int = Field(description="Its position in the request's `payouts`.")
    destination: str
    amount_sat: int
    reference: str | None
    status: Status
    txid: str | None = Field(description="The transaction paying it, once signed.")


class PayoutRoundSummary(ResponseModel):
    id: str
    wallet: str | None
    reference: str | None
    payout_count: int
    total_sat: int
    counts: dict[str, int] = Field(description="The round's payouts by withdrawal status.")
    created_at: Timestamp


class PayoutRoundView(PayoutRoundSummary):
    payouts: list[RoundPayoutView] = Field(description="Every payout, in request order.")


class PayoutRoundPage(ResponseModel):
    payout_rounds: list[PayoutRoundSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DeniedPayoutView(ResponseModel):
    """One payout of a refused round and the rules it broke."""

    index: int
    destination: str
    amount_sat: int
    rules: list[RuleResultView]
