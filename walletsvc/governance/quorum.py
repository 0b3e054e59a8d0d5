"""Can a quorum still be reached with the staff we have? Warnings for people, no decisions.

A quorum counts enabled approvers of the required group, never the requester, and each person
once (walletsvc.governance.approvals). With too few such members a request can never pass:
for example two treasury approvers and an unfreeze needing 2-of-2 that one of them asked for.
Nothing here changes what counts; it only says early where the count will fall short.
"""

from __future__ import annotations

from dataclasses import dataclass

from walletsvc.db.models import Wallet
from walletsvc.db.models_governance import ApprovalRequest, Staff
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.governance.approvals import excluded_staff
from walletsvc.governance.policies import IntegrityFailure, active_policy
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
    """Where a policy in force asks for more approvers than the staff can provide: the default
    policy (every wallet without its own, and the actions of no wallet), and each wallet's own
    policy, each read as the service enforces it (its integrity tag checked)."""
    warnings: list[str] = []
    for scope, document in _policies_in_force(uow, tags, warnings):
        for need in policy_needs(document):
            members = len(_approvers_of(uow, tags, need.group))
            if members < need.m:
                outcome = "it can never be approved"
            elif members - 1 < need.m:
                outcome = (
                    "if one of them asks, it can never be approved"
                    " (nobody approves their own request)"
                )
            else:
                continue
            warnings.append(
                f"{scope}{need.what} needs {need.m} of group {need.group!r}, which has"
                f" {members} enabled approver(s): {outcome}"
            )
    return list(dict.fromkeys(warnings))  # a broken default policy is said once, not per wallet


def _policies_in_force(
    uow: ReadUnitOfWork, tags: RowTagger, warnings: list[str]
) -> list[tuple[str, PolicyDocument]]:
    """(prefix naming the scope, document) of the default policy and of every wallet's own;
    a policy failing its integrity check is a warning of its own (it decides nothing)."""
    found: list[tuple[str, PolicyDocument]] = []
    scopes: list[tuple[str, Wallet | None]] = [("", None)]
    scopes += [(f"wallet {w.name!r}: ", w) for w in uow.wallets.all_by_name()]
    for prefix, wallet in scopes:
        try:
            active = active_policy(uow, tags, wallet)
        except IntegrityFailure as exc:
            warnings.append(f"{prefix}{exc.message}: its quorums cannot be checked")
            continue
        if wallet is None or active.wallet_scoped:
            found.append((prefix, active.document))
    return found
