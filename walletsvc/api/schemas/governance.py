"""Response bodies of governance: staff sessions, approvals, allowlist, policy, audit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel, Timestamp

# --- Sessions --------------------------------------------------------------------------------


class StaffSummary(ResponseModel):
    username: str
    role: Literal["approver", "operator", "auditor"]
    groups: list[str]


class SessionCreated(ResponseModel):
    token: str = Field(description="The session token (`wsst_…`), shown this once.")
    expires_at: Timestamp
    staff: StaffSummary


class PasskeyView(ResponseModel):
    """One of the caller's own passkeys (the public key and credential id are not shown)."""

    id: str
    label: str
    created_at: Timestamp
    last_used_at: Timestamp | None


class PasskeyList(ResponseModel):
    passkeys: list[PasskeyView]


# --- Approvals -------------------------------------------------------------------------------


class RequiredApprovals(ResponseModel):
    """``m`` approvals from members of ``group``."""

    group: str
    m: int


class ApprovalDecisionView(ResponseModel):
    staff: str = Field(description="The deciding staff member's username.")
    decision: Literal["approve", "reject"]
    comment: str | None
    digest: str = Field(description="The content digest the decision was made on.")
    counts: bool = Field(description="Whether the decision counts towards the quorum.")
    created_at: Timestamp


class ApprovalRequestView(ResponseModel):
    id: str
    kind: str
    subject_id: str
    status: Literal["pending", "approved", "rejected", "expired", "cancelled"]
    required: RequiredApprovals
    approvals_counted: int
    digest: str = Field(description="SHA-256 of the canonical JSON of `content`.")
    content: dict[str, Any] = Field(description="What is being approved; its shape is per kind.")
    requester: str
    created_at: Timestamp
    expires_at: Timestamp
    decided_at: Timestamp | None
    decisions: list[ApprovalDecisionView]


class ApprovalRequestList(ResponseModel):
    approvals: list[ApprovalRequestView]


# --- Allowlist -------------------------------------------------------------------------------


class AllowlistEntryView(ResponseModel):
    id: str
    wallet: str
    address: str
    label: str | None
    source: str = Field(description="`treasury` (proposed by staff) or `payout` (by a token).")
    status: str = Field(description="`pending`, `active`, `rejected`, `expired` or `removed`.")
    proposed_by: str
    created_at: Timestamp
    active_since: Timestamp | None
    usable_from: Timestamp | None = Field(description="When the cooling-off period ends.")
    removed_at: Timestamp | None
    approval_request_id: str | None
    integrity_ok: bool = Field(description="Whether the entry's integrity tag verifies.")


class AllowlistEntryList(ResponseModel):
    entries: list[AllowlistEntryView]


# --- Policy ----------------------------------------------------------------------------------


class ActivePolicy(ResponseModel):
    version: int
    sha256: str
    wallet_scoped: bool
    rules: dict[str, Any] = Field(
        description="The policy document in canonical form (docs/policy.md)."
    )


class PolicyProposalView(ResponseModel):
    id: str
    wallet: str | None
    status: str
    sha256: str
    base_sha256: str
    direction: str = Field(description="`tighten` or `loosen`, as assessed by the ratchet.")
    assessment: dict[str, Any] = Field(description="The ratchet's assessment of the change.")
    timelock_s: int
    proposed_by: str
    approval_request_id: str | None
    approval_status: str | None
    required: RequiredApprovals | None
    created_at: Timestamp
    effective_at: Timestamp | None
    effective_height: int | None = Field(
        description="A loosening's time lock also waits for this block height (about one block "
        "per 10 minutes of the lock, counted from the quorum); null until the quorum is met."
    )
    applied_at: Timestamp | None
    vetoed_by: str | None
    document: dict[str, Any]


class PolicyProposalList(ResponseModel):
    proposals: list[PolicyProposalView]


# --- Audit -----------------------------------------------------------------------------------


class AuditEventView(ResponseModel):
    seq: int
    created_at: Timestamp
    actor: str
    action: str
    subject_type: str
    subject_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str = Field(description="HMAC chaining this event to `prev_hash`.")


class AuditPage(ResponseModel):
    events: list[AuditEventView]
    next_after: int = Field(description="Pass as `after` to read the next page.")
