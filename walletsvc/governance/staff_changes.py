"""Enrolling a member after the signer's genesis: a governed action (kind ``staff_change``).

After genesis the signer enrols nobody on the service's word: it wants the policy's
``policy_change`` quorum of decisions it recorded itself on exactly the content
``{kind: "staff_change", action, staff_id, username, role, groups}``
(walletsvc.signer.people). ``walletsvc staff add`` then opens this request instead of
enrolling; approvers decide it like any other (each decision goes to the signer); once it is
approved an operator applies it (``walletsvc staff apply``): the staff row is made and the
signer enrols the member, makes the TOTP secret and answers it once. Each approved change
applies once (the signer refuses its evidence a second time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import new_id
from walletsvc.db.models_governance import ApprovalRequest, Staff
from walletsvc.db.models_staff_auth import StaffChange
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.staff import (
    CreatedStaff,
    check_groups_in_policy,
    check_new_staff,
    hash_password,
    now_utc,
    tag_staff,
)
from walletsvc.keys.integrity import RowTagger

KIND = "staff_change"
PENDING = "pending_approval"
APPROVED = "approved"


@dataclass(frozen=True)
class PendingStaffChange:
    change_id: str
    approval_request_id: str
    username: str


def change_content(row: StaffChange) -> dict[str, Any]:
    """What approvers agree to, and what the signer hashes: keep the two alike."""
    return {
        "kind": KIND,
        "action": row.action,
        "staff_id": row.staff_id,
        "username": row.username,
        "role": row.role,
        "groups": sorted(row.groups),
    }


def request_enrolment(
    db: Database,
    tags: RowTagger,
    *,
    username: str,
    password: str,
    role: str,
    groups: list[str],
    requester: Requester,
    now: datetime | None = None,
) -> PendingStaffChange:
    """Ask the ``policy_change`` quorum to enrol a new member (after the signer's genesis)."""
    check_new_staff(username, password, role, groups)
    password_hash = hash_password(password)
    moment = now_utc(now)
    with db.write() as uow:
        if uow.staff.by_username(username) is not None:
            raise Conflict(f"staff member {username!r} exists already", field="username")
        if uow.staff_changes.open_for_username(username) is not None:
            raise Conflict(f"an enrolment of {username!r} is open already", field="username")
        check_groups_in_policy(uow, tags, groups)
        document = active_policy(uow, tags, None).document
        row = StaffChange(
            id=new_id(),
            staff_id=new_id(),
            action="enrol",
            username=username,
            role=role,
            groups=sorted(set(groups)),
            password_hash=password_hash,
            status=PENDING,
            requested_by=requester.actor,
            created_at=moment,
        )
        request = approvals.governed_action(
            uow,
            tags,
            row,
            store=uow.staff_changes,
            kind=KIND,
            approvers=Approvers.from_policy(document, "policy_change", moment),
            requester=requester,
            now=moment,
            event="staff.change_requested",
            subject_type="staff",
            details=lambda: {
                "username": username,
                "role": role,
                "groups": row.groups,
                "approval_request_id": row.approval_request_id,
            },
        )
        assert request is not None
    return PendingStaffChange(row.id, request.id, username)


def apply_enrolment(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    change_id: str,
    actor: str,
    now: datetime | None = None,
) -> CreatedStaff:
    """Apply an approved enrolment: the staff row, and the signer's enrolment (it counts the
    quorum on the content itself and answers the new TOTP secret once)."""
    moment = now_utc(now)
    with db.write() as uow:
        row = _get(uow, change_id)
        if row.status != APPROVED:
            raise Conflict(f"this staff change is {row.status}", field="id")
        request = uow.approval_requests.get(row.approval_request_id or "")
        if request is None:
            raise IntegrityFailure(f"staff change {row.id} has lost its approval request")
        approvals.verify_request(tags, request)
        if uow.staff.by_username(row.username) is not None:
            raise Conflict(f"staff member {row.username!r} exists already", field="username")
        member = Staff(
            id=row.staff_id,
            username=row.username,
            role=row.role,
            groups=sorted(row.groups),
            password_hash=row.password_hash,
            failed_attempts=0,
            mac="",
        )
        uow.staff.add(member, flush=True)
        tag_staff(tags, member)
        content = request.content  # what the approvers decided, covered by the tagged digest
        enrolment = signer.enrol_staff(
            staff_id=str(content["staff_id"]),
            username=str(content["username"]),
            role=str(content["role"]),
            groups=[str(g) for g in content["groups"]],
        )
        row.status, row.decided_at = "applied", moment
        uow.audit(
            actor,
            "staff.created",
            "staff",
            member.id,
            {
                "username": member.username,
                "role": member.role,
                "groups": member.groups,
                "enrolled": "signer",
                "staff_change_id": row.id,
            },
        )
    if enrolment.totp_secret is None or enrolment.otpauth_uri is None:
        raise IntegrityFailure(f"the signer knew staff member {row.staff_id} already")
    return CreatedStaff(
        member.id,
        member.username,
        member.role,
        list(member.groups),
        enrolment.totp_secret,
        enrolment.otpauth_uri,
    )


def _get(uow: ReadUnitOfWork, change_id: str) -> StaffChange:
    row = uow.staff_changes.get(change_id)
    if row is None:
        raise NotFound("no such staff change", field="id")
    return row


class StaffChangeApprovals:
    """The handler: an approved enrolment waits for an operator to apply it."""

    name = KIND

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return change_content(_get(uow, subject_id))

    def excluded_staff(self, uow: ReadUnitOfWork, subject_id: str) -> set[str]:
        return {_get(uow, subject_id).staff_id}

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        row = _get(ctx.uow, request.subject_id)
        row.status = APPROVED
        ctx.uow.audit(
            ctx.actor,
            "staff.change_approved",
            "staff",
            row.staff_id,
            {"staff_change_id": row.id, "approval_request_id": request.id},
        )

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, _get(ctx.uow, request.subject_id), "rejected", ctx.now)

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        _close(ctx.uow, _get(ctx.uow, request.subject_id), "expired", ctx.now)


def _close(uow: UnitOfWork, row: StaffChange, status: str, now: datetime) -> None:
    row.status, row.decided_at = status, now
