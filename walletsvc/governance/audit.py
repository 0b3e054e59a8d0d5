"""Reading and verifying the audit log and the integrity tags of governed rows."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from walletsvc.db.database import (
    AUDIT_HEAD_SUBJECT,
    GENESIS_HASH,
    INTEGRITY_FAILURE,
    Database,
    audit_digest,
    audit_fields,
    audit_head_tag,
)
from walletsvc.db.models import AuditEvent, PolicyVersion, Withdrawal
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import GOVERNED_ROW_KINDS, approval_decision_message
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import DomainError
from walletsvc.domain.network import Network
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.governance.approvals import content_problem
from walletsvc.governance.staff import lock_cleared
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import PolicyError, parse_policy, policy_hash

_UNPAID = (WithdrawalStatus.PENDING_APPROVAL.value, WithdrawalStatus.APPROVED.value)


@dataclass
class VerifyReport:
    events_checked: int = 0
    rows_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def events_after(uow: ReadUnitOfWork, after: int, limit: int) -> list[dict[str, Any]]:
    rows = uow.audit_events.after(after, limit=limit)
    return [{**audit_fields(ev), "prev_hash": ev.prev_hash, "hash": ev.hash} for ev in rows]


def verify(
    uow: ReadUnitOfWork,
    tags: RowTagger,
    audit_key: bytes,
    *,
    batch: int = 5_000,
    anchors: Sequence[tuple[int, str]] = (),
    now: datetime | None = None,
) -> VerifyReport:
    """The chain, the head, every governed row's tag and, with ``anchors`` (every head the
    signer recorded: walletsvc.signer.anchors), that the chain still holds each anchored
    event as it was. Whoever holds the audit key can rewrite a consistent shorter or
    different chain, and grow it past the last anchor so that the signer anchors the
    rewritten one next; the earlier anchors are outside their reach. Every anchor is
    checked: each pins the events before it."""
    report = VerifyReport()
    pinned = dict(anchors)
    # Payouts not yet paid by the rows' account; the log says which ones were signed.
    unpaid = {w.id: w.status for w in uow.withdrawals.with_statuses(_UNPAID)}
    prev_hash, expected_seq, last_seq = GENESIS_HASH, 1, 0
    while True:
        rows = uow.audit_events.from_seq(expected_seq, limit=batch)
        if not rows:
            break
        for ev in rows:
            if ev.seq != expected_seq:
                report.problems.append(f"audit event {expected_seq} is missing")
            if ev.prev_hash != prev_hash:
                report.problems.append(f"audit event {ev.seq} does not link to its predecessor")
            if audit_digest(audit_key, ev.prev_hash, audit_fields(ev)) != ev.hash:
                report.problems.append(f"audit event {ev.seq} was altered")
            _check_event(ev, unpaid, report)
            anchored = pinned.pop(ev.seq, None)
            if anchored is not None and not hmac.compare_digest(ev.hash, anchored):
                report.problems.append(
                    f"audit event {ev.seq} is not the one the signer anchored (the log was"
                    " rewritten)"
                )
            prev_hash, expected_seq, last_seq = ev.hash, ev.seq + 1, ev.seq
            report.events_checked += 1
    head = uow.audit_events.head()
    if head is None or head.last_seq != last_seq or head.last_hash != prev_hash:
        report.problems.append("the audit head does not match the last event (events removed?)")
    elif last_seq and not hmac.compare_digest(
        head.mac or "", audit_head_tag(audit_key, head.last_seq, head.last_hash)
    ):
        report.problems.append(
            "the audit head fails its integrity tag (the last events removed, the head rewritten?)"
        )
    _report_lost_anchors(pinned, last_seq, report)
    _verify_rows(uow, tags, report)
    _verify_staff_locks(uow, report, now or datetime.now(UTC))
    return report


def _report_lost_anchors(lost: dict[int, str], last_seq: int, report: VerifyReport) -> None:
    """Anchored events the walk did not meet: cut off the end, or deleted from the middle.
    (A genesis anchor, seq 0, names no event.)"""
    seqs = sorted(seq for seq in lost if seq > 0)
    if not seqs:
        return
    beyond = [seq for seq in seqs if seq > last_seq]
    if beyond:
        report.problems.append(
            f"audit event {beyond[-1]}, which the signer anchored, is gone (the log was"
            f" truncated after event {last_seq})"
        )
    for seq in [seq for seq in seqs if seq <= last_seq][:20]:
        report.problems.append(f"audit event {seq}, which the signer anchored, is gone")


def _check_event(ev: AuditEvent, unpaid: dict[str, str], report: VerifyReport) -> None:
    """What one event says about rows now: a payout it records as signed must not be waiting
    to be paid (a paid payout flipped back, its transaction link deleted too); a broken head
    found at a write stays a finding though that write re-tagged the head."""
    if ev.action == "transaction.signed":
        for withdrawal_id in ev.data.get("withdrawals", ()):
            status = unpaid.get(str(withdrawal_id))
            if status is not None:
                report.problems.append(
                    f"withdrawal {withdrawal_id} is {status} but audit event {ev.seq}"
                    " records it signed (its status was edited?)"
                )
    elif ev.action == INTEGRITY_FAILURE and ev.subject_type == AUDIT_HEAD_SUBJECT:
        report.problems.append(
            f"audit event {ev.seq}: {ev.data.get('reason')} at seq {ev.data.get('head_seq')}"
        )


def _verify_staff_locks(uow: ReadUnitOfWork, report: VerifyReport, now: datetime) -> None:
    """A lock the log records, still running, must still be on the staff row."""
    for staff in uow.staff.all_by_username():
        problem = lock_cleared(uow, staff, now)
        if problem is not None:
            report.problems.append(problem)


def _verify_rows(uow: ReadUnitOfWork, tags: RowTagger, report: VerifyReport) -> None:
    """Every governed row kind's tag, with the message the tagging code uses (db/tags.py)."""
    requests: list[ApprovalRequest] = []
    for kind in GOVERNED_ROW_KINDS:
        for row in uow.audit_events.governed_rows(kind):
            report.rows_checked += 1
            if not tags.verify(kind.message(row), kind.tag_of(row)):
                report.problems.append(f"{kind.noun} {kind.name_of(row)} fails its integrity tag")
            elif isinstance(row, PolicyVersion) and not _document_matches(row):
                # The tag covers the document's hash, not the document: check that link too.
                report.problems.append(f"policy version {row.version} does not match its hash")
            elif isinstance(row, ApprovalRequest):
                requests.append(row)
            elif isinstance(row, Withdrawal) and not _address_matches(uow, row):
                # The tag covers the script paid; the address shown (to approvers, in the
                # API, in the audit log) must be that script's address.
                report.problems.append(
                    f"approved withdrawal {row.id} shows an address that is not its script's"
                )
            elif isinstance(row, Withdrawal) and row.transaction_id is not None:
                # The tag covers what is paid, not whether it was: see the worker.
                report.problems.append(
                    f"approved withdrawal {row.id} already belongs to transaction"
                    f" {row.transaction_id} (its status was edited?)"
                )
    # A request's tag covers its content's digest; the content and the subject are checked
    # against it (a rewritten pending payout, which carries no tag of its own, shows up here).
    # A subject already reported by its own tag is one finding, not two.
    for request in requests:
        problem = content_problem(uow, request)
        if problem is not None and not any(request.subject_id in p for p in report.problems):
            report.problems.append(f"approval request {request.id} {problem}")
        elif request.status == "approved" and not _signed_off(uow, tags, request):
            report.problems.append(
                f"approval request {request.id} is approved without m genuine approvals"
                " (its status was edited?)"
            )


def _signed_off(uow: ReadUnitOfWork, tags: RowTagger, request: ApprovalRequest) -> bool:
    """Whether m people approved this content with genuine decisions. (Not the full tally:
    an approver disabled or moved since then does not make a past approval false.)"""
    decisions = uow.approval_decisions.on_content(request)
    if not all(tags.verify(approval_decision_message(d), d.mac) for d in decisions):
        return True  # an edited decision is its own finding; one finding per edited row
    approvers = {d.staff_id for d in decisions if d.decision == "approve"}
    return len(approvers) >= request.m


def _address_matches(uow: ReadUnitOfWork, row: Withdrawal) -> bool:
    wallet = uow.wallets.get(row.wallet_id)
    if wallet is None:
        return False
    try:
        decoded = decode_address(row.destination, Network(wallet.network), field="destination")
    except DomainError:
        return False
    return decoded.script_pubkey.hex() == row.script_pubkey


def _document_matches(policy: PolicyVersion) -> bool:
    try:
        return policy_hash(parse_policy(policy.document)) == policy.sha256
    except PolicyError:
        return False


def audit_page(db: Database, *, after: int, limit: int) -> dict[str, Any]:
    """Up to ``limit`` events after sequence number ``after``, and where the next page starts."""
    with db.read() as uow:
        events = events_after(uow, after, limit)
    return {"events": events, "next_after": events[-1]["seq"] if events else after}


def record_integrity_failure(db: Database, reason: str) -> None:
    """Audit a governed row found failing its check at use, in a transaction of its own (the
    use case's own transaction rolls back with the error). The risk monitor freezes on it."""
    with db.write() as uow:
        uow.audit("system", INTEGRITY_FAILURE, "governed_row", None, {"reason": reason})
