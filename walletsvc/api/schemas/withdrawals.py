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


class WithdrawalPreview(ResponseModel):
    """A dry run: what `POST /v1/withdrawals` would decide now; nothing was created."""

    wallet: str
    destination: str = Field(description="The destination in its canonical form.")
    amount_sat: int
    reference: str | None
    status: Status | None = Field(
        description="The status the withdrawal would start in; null when the policy denies it."
    )
    decision: PolicyDecision
    policy_sha256: str = Field(description="The policy version that decided.")


class FeeEstimate(ResponseModel):
    target_blocks: int = Field(description="The confirmation target the rate is for.")
    fee_rate_sat_per_vb: int = Field(
        description="The rate the signer would use now (the chain's estimate within the "
        "configured floor and ceiling)."
    )
    single_payout_vsize: int = Field(
        description="Virtual size of a payout sent alone (one input, payout and change)."
    )
    single_payout_fee_sat: int = Field(
        description="Its fee at this rate: an upper bound; batched payouts share the cost."
    )
    max_fee_sat: int = Field(description="No transaction is signed with a larger fee.")
