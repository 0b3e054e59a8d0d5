"""Response bodies of payouts: the withdrawal and the policy decision it carries."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictStr, WithJsonSchema

from walletsvc.api.schemas.base import ResponseModel, Timestamp
from walletsvc.api.schemas.governance import ApprovalDecisionView, RequiredApprovals
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.policy.engine import Outcome, Result

# The status is stored as the enum's value; the schema lists the values from the enum itself.
Status = Annotated[
    StrictStr, WithJsonSchema({"type": "string", "enum": [s.value for s in WithdrawalStatus]})
]


class RuleResultView(ResponseModel):
    rule: str
    result: Result
    detail: str


class PolicyDecision(ResponseModel):
    """The policy's decision on a payout, with each rule's result."""

    outcome: Outcome
    rules: list[RuleResultView]
    required: RequiredApprovals | None = Field(
        description="The approvals needed when the outcome is `require_approval`."
    )


class WithdrawalView(ResponseModel):
    id: str
    wallet: str | None
    destination: str
    amount_sat: int
    reference: str | None
    status: Status
    decision: PolicyDecision
    approval_request_id: str | None
    approvals: list[ApprovalDecisionView]
    txid: str | None
    raw_tx: str | None = Field(description="The signed transaction (hex), once signed.")
    fee_sat: int | None = Field(description="This payout's share of the transaction fee.")
    transaction_fee_sat: int | None = Field(
        description="The whole transaction's fee (payouts may share one transaction)."
    )
    confirmations: int
    failure_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class WithdrawalPage(ResponseModel):
    withdrawals: list[WithdrawalView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
