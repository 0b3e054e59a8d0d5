"""Can a quorum still be reached with the staff we have? Warnings for people, no decisions.

A quorum counts enabled approvers of the required group, never the requester, and each person
once (walletsvc.governance.approvals). With too few such members a request can never pass:
for example two treasury approvers and an unfreeze needing 2-of-2 that one of them asked for.
Nothing here changes what counts; it only says early where the count will fall short.
"""

from __future__ import annotations

from dataclasses import dataclass

from walletsvc.db.models_governance import ApprovalRequest, Staff
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.governance.approvals import excluded_staff
from walletsvc.governance.policies import active_policy
from walletsvc.governance.staff import staff_is_genuine
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import GOVERNED_ACTIONS, PolicyDocument


@dataclass(frozen=True)
class QuorumNeed:
    what: str  # "payouts above 10000000 sat", "unfreeze", ...
    group: str
    m: int


def _approvers_of(uow: ReadUnitOfWork, tags: RowTagger, group: str) -> list[Staff]:
    return [
        s
        for s in uow.staff.all_by_username()
        if s.disabled_at is None
        and s.role == "approver"
        and group in s.groups
        and staff_is_genuine(tags, s)
    ]


def request_shortfall(uow: ReadUnitOfWork, tags: RowTagger, request: ApprovalRequest) -> str | None:
    """Why this pending request can never reach its quorum with the current members, or None."""
    excluded = excluded_staff(uow, request)
    eligible = [
        s for s in _approvers_of(uow, tags, request.required_group)
        if s.id != request.requester_staff_id and s.id not in excluded
    ]  # fmt: skip
    if len(eligible) >= request.m:
        return None
    return (
        f"this request needs {request.m} approvers of group {request.required_group!r} other"
        f" than its requester (and those it concerns), and only {len(eligible)} exist: it"
        " cannot reach its quorum until more approvers are added"
    )


def policy_needs(document: PolicyDocument) -> list[QuorumNeed]:
    needs = [
        QuorumNeed(f"payouts above {tier.above_sat} sat", tier.group, tier.m)
        for tier in document.approval_tiers
    ]
    for action in GOVERNED_ACTIONS:
        quorum = document.quorum_for(action)
        needs.append(QuorumNeed(action.replace("_", " "), quorum.group, quorum.m))
    if document.allowlist is not None and document.allowlist.approval is not None:
        quorum = document.allowlist.approval
        needs.append(QuorumNeed("payouts off the allowlist", quorum.group, quorum.m))
    for rule in document.risk.rules if document.risk else ():
        if rule.approval is not None:
            needs.append(QuorumNeed(f"risk rule {rule.id}", rule.approval.group, rule.approval.m))
    return needs


def staff_shortfalls(uow: ReadUnitOfWork, tags: RowTagger) -> list[str]:
    """Where the policy in force asks for more approvers than the staff can provide."""
    document = active_policy(uow, tags, None).document
    warnings = []
    for need in policy_needs(document):
        members = len(_approvers_of(uow, tags, need.group))
        if members < need.m:
            warnings.append(
                f"{need.what} needs {need.m} of group {need.group!r}, which has {members}"
                " enabled approver(s): it can never be approved"
            )
        elif members - 1 < need.m:
            warnings.append(
                f"{need.what} needs {need.m} of group {need.group!r}, which has {members}"
                " enabled approver(s): if one of them asks, it can never be approved"
                " (nobody approves their own request)"
            )
    return warnings
