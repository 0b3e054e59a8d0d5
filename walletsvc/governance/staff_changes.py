"""Enrolling or changing a member after the signer's genesis: a governed action (kind
``staff_change``).

After genesis the signer enrols nobody and changes nobody's role or groups on the service's
word: it wants the policy's ``policy_change`` quorum of decisions it recorded itself on exactly
the content ``{kind: "staff_change", action, staff_id, username, role, groups}``
(walletsvc.signer.people). ``walletsvc staff add`` (or the console's ``Add member``) then opens
this request instead of enrolling, ``walletsvc staff update`` (or the console's ``Change``)
one with action ``update``; approvers decide it like any other (each decision goes to the
signer); once it is approved an operator applies it (``walletsvc staff apply``, the console's
``Apply``): for an enrolment the staff row is made and the signer enrols the member, makes the
TOTP secret and answers it once; for an update the row changes with the signer's. Each approved
change applies once (the signer refuses its evidence a second time).

A change that only takes power away (groups removed, an approver's role given up) is a
tightening: like disabling, it applies at once on one operator's word, the signer first.

The row is tagged (:func:`walletsvc.db.tags.staff_change_message`, the new member's password
hash included) and its tag is checked at apply and by ``walletsvc audit verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import new_id
from walletsvc.db.models_governance import Staff
from walletsvc.db.models_staff_auth import StaffChange
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import staff_change_message
from walletsvc.domain.access import ROLES
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.governance import approvals
from walletsvc.governance.applied_later import AppliedLaterApprovals
from walletsvc.governance.approvals import Approvers, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.staff import (
    GROUP_RE,
    CreatedStaff,
    check_groups_in_policy,
    check_new_staff,
    get_staff_by_name,
    hash_password,
    now_utc,
    staff_is_genuine,
    tag_staff,
)
from walletsvc.keys.integrity import RowTagger

KIND = "staff_change"
PENDING = "pending_approval"
APPROVED = "approved"
OPEN = (PENDING, APPROVED)


@dataclass(frozen=True)
class PendingStaffChange:
    change_id: str
    approval_request_id: str
    username: str


@dataclass(frozen=True)
class UpdatedStaff:
    """A member's role and groups as they are now (after a tightening or an applied change)."""

    username: str
    role: str
    groups: list[str]


@dataclass(frozen=True)
class AppliedStaffChange:
    """What an applied change did; ``created`` (an enrolment) holds the one-time secret."""

    change_id: str
    action: str
    member: UpdatedStaff
    created: CreatedStaff | None


def genesis_open(signer: SignerPort) -> bool:
    """Whether the signer still enrols on the service's word (its status says)."""
    return bool(signer.status().get("genesis_open", False))


def tag_change(tags: RowTagger, row: StaffChange) -> None:
    row.mac = tags.tag(staff_change_message(row))


def change_is_genuine(tags: RowTagger, row: StaffChange) -> bool:
    return tags.verify(staff_change_message(row), row.mac)


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
        return _open_change(
            uow,
            tags,
            new_id(),
            "enrol",
            username,
            role,
            sorted(set(groups)),
            password_hash,
            requester,
            moment,
        )


def _open_change(
    uow: UnitOfWork,
    tags: RowTagger,
    staff_id: str,
    action: str,
    username: str,
    role: str,
    groups: list[str],
    password_hash: str,
    requester: Requester,
    moment: datetime,
) -> PendingStaffChange:
    """The tagged change row and its approval request (the ``policy_change`` quorum)."""
    document = active_policy(uow, tags, None).document
    row = StaffChange(
        id=new_id(),
        staff_id=staff_id,
        action=action,
        username=username,
        role=role,
        groups=groups,
        password_hash=password_hash,
        status=PENDING,
        requested_by=requester.actor,
        created_at=moment,
        mac="",
    )
    tag_change(tags, row)
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
            "action": action,
            "role": role,
            "groups": groups,
            "approval_request_id": row.approval_request_id,
        },
    )
    assert request is not None
    return PendingStaffChange(row.id, request.id, username)


def request_update(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    username: str,
    role: str | None,
    groups: list[str] | None,
    requester: Requester,
    now: datetime | None = None,
) -> PendingStaffChange | UpdatedStaff:
    """Change a member's role and/or groups (None: unchanged). A tightening, or any change
    while the signer's genesis is open, applies at once (the signer first); anything else
    opens a ``staff_change`` (action ``update``) for the ``policy_change`` quorum."""
    moment = now_utc(now)
    with db.read() as uow:
        target = get_staff_by_name(uow, username)
        new_role, new_groups = _checked_update(uow, tags, target, role, groups, requester)
        at_once = _tightens(target, new_role, new_groups) or genesis_open(signer)
    if at_once:
        return _update_at_once(db, tags, signer, username, new_role, new_groups, requester, moment)
    with db.write() as uow:
        target = get_staff_by_name(uow, username)
        if uow.staff_changes.open_for_username(username) is not None:
            raise Conflict(f"a change of {username!r} is open already", field="username")
        return _open_change(
            uow, tags, target.id, "update", username, new_role, new_groups, "", requester, moment
        )


def _checked_update(
    uow: ReadUnitOfWork,
    tags: RowTagger,
    target: Staff,
    role: str | None,
    groups: list[str] | None,
    requester: Requester,
) -> tuple[str, list[str]]:
    """The member's new role and groups, checked: a real change, of someone else, enabled,
    to a known role and to groups the policies in force name."""
    if target.disabled_at is not None:
        raise Conflict(f"{target.username!r} is disabled", field="username")
    if requester.staff_id == target.id:
        raise Conflict("ask another operator to change your own role or groups", field="username")
    if not staff_is_genuine(tags, target):
        raise IntegrityFailure(f"staff member {target.username} fails its integrity check")
    new_role = target.role if role is None else role
    if new_role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    new_groups = sorted(set(target.groups if groups is None else groups))
    bad = [g for g in new_groups if not GROUP_RE.match(g)]
    if bad:
        raise InvalidInput(f"invalid group name(s): {', '.join(bad)}", field="group")
    check_groups_in_policy(uow, tags, new_groups)
    if new_role == target.role and new_groups == sorted(target.groups):
        raise InvalidInput("this is the member's role and groups already", field="role")
    return new_role, new_groups


def _tightens(target: Staff, role: str, groups: list[str]) -> bool:
    """Less power only: groups removed, or an approver's role given up (as the signer's own
    rule, walletsvc.signer.people)."""
    return set(groups) <= set(target.groups) and target.role in (role, "approver")


def _update_at_once(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    username: str,
    role: str,
    groups: list[str],
    requester: Requester,
    moment: datetime,
) -> UpdatedStaff:
    """The signer first (its count of decisions follows at once, whatever the database says
    later), then the row here; the member's sessions end (they carry the old role)."""
    with db.read() as uow:
        staff_id = get_staff_by_name(uow, username).id
    signer.enrol_staff(staff_id=staff_id, username=username, role=role, groups=groups)
    with db.write() as uow:
        target = get_staff_by_name(uow, username)
        _set_role_and_groups(uow, tags, target, role, groups, moment)
        uow.audit(
            requester.actor,
            "staff.updated",
            "staff",
            target.id,
            {"username": username, "role": role, "groups": groups, "applied": "at once"},
        )
    return UpdatedStaff(username, role, groups)


def _set_role_and_groups(
    uow: UnitOfWork, tags: RowTagger, target: Staff, role: str, groups: list[str], now: datetime
) -> None:
    target.role, target.groups = role, sorted(groups)
    tag_staff(tags, target)
    uow.staff_sessions.revoke_all_of(target.id, now)


def apply_change(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    change_id: str,
    actor: str,
    now: datetime | None = None,
) -> AppliedStaffChange:
    """Apply an approved change: the row here, and the signer's enrolment or change (it counts
    the quorum on the content itself; an enrolment's new TOTP secret is answered once)."""
    moment = now_utc(now)
    with db.write() as uow:
        row = _get(uow, change_id)
        if row.status != APPROVED:
            raise Conflict(f"this staff change is {row.status}", field="id")
        if not change_is_genuine(tags, row):
            raise IntegrityFailure(f"staff change {row.id} fails its integrity check")
        request = uow.approval_requests.get(row.approval_request_id or "")
        if request is None:
            raise IntegrityFailure(f"staff change {row.id} has lost its approval request")
        approvals.verify_request(tags, request)
        content = request.content  # what the approvers decided, covered by the tagged digest
        if content != change_content(row):
            raise IntegrityFailure(f"staff change {row.id} is not what its approvers decided")
        if row.action == "update":
            member = _apply_update(uow, tags, signer, row, moment)
            created = None
        else:
            created = _apply_enrolment(uow, tags, signer, row)
            member = UpdatedStaff(created.username, created.role, created.groups)
        row.status, row.decided_at = "applied", moment
        uow.audit(
            actor,
            "staff.created" if created is not None else "staff.updated",
            "staff",
            row.staff_id,
            {
                "username": member.username,
                "role": member.role,
                "groups": member.groups,
                "enrolled": "signer",
                "staff_change_id": row.id,
            },
        )
    return AppliedStaffChange(row.id, row.action, member, created)


def apply_enrolment(
    db: Database,
    tags: RowTagger,
    signer: SignerPort,
    *,
    change_id: str,
    actor: str,
    now: datetime | None = None,
) -> CreatedStaff:
    """:func:`apply_change` of an enrolment: the new member with their one-time secret."""
    applied = apply_change(db, tags, signer, change_id=change_id, actor=actor, now=now)
    if applied.created is None:
        raise Conflict(f"staff change {change_id} is an {applied.action}", field="id")
    return applied.created


def _apply_enrolment(
    uow: UnitOfWork, tags: RowTagger, signer: SignerPort, row: StaffChange
) -> CreatedStaff:
    if uow.staff.by_username(row.username) is not None:
        raise Conflict(f"staff member {row.username!r} exists already", field="username")
    member = Staff(
        id=row.staff_id,
        username=row.username,
        role=row.role,
        groups=sorted(row.groups),
        password_hash=row.password_hash,  # covered by the change's tag, checked above
        failed_attempts=0,
        mac="",
    )
    uow.staff.add(member, flush=True)
    tag_staff(tags, member)
    enrolment = signer.enrol_staff(
        staff_id=row.staff_id, username=row.username, role=row.role, groups=member.groups
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


def _apply_update(
    uow: UnitOfWork, tags: RowTagger, signer: SignerPort, row: StaffChange, now: datetime
) -> UpdatedStaff:
    target = uow.staff.get(row.staff_id)
    if target is None or target.username != row.username:
        raise Conflict(f"staff member {row.username!r} is not the one this change names")
    if target.disabled_at is not None:
        raise Conflict(f"{row.username!r} is disabled", field="username")
    _set_role_and_groups(uow, tags, target, row.role, list(row.groups), now)
    signer.enrol_staff(
        staff_id=target.id, username=target.username, role=row.role, groups=target.groups
    )
    return UpdatedStaff(target.username, target.role, list(target.groups))


def changes_index(db: Database, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest staff changes (no password hashes), for the console's staff page."""
    with db.read() as uow:
        return [
            {
                **change_content(row),
                "id": row.id,
                "status": row.status,
                "requested_by": row.requested_by,
                "approval_request_id": row.approval_request_id,
                "created_at": row.created_at.isoformat(),
            }
            for row in uow.staff_changes.newest(limit)
        ]


def _get(uow: ReadUnitOfWork, change_id: str) -> StaffChange:
    row = uow.staff_changes.get(change_id)
    if row is None:
        raise NotFound("no such staff change", field="id")
    return row


class StaffChangeApprovals(AppliedLaterApprovals):
    """The handler: an approved change waits for an operator to apply it."""

    name = KIND
    approved_event = "staff.change_approved"
    id_key = "staff_change_id"

    def row(self, uow: ReadUnitOfWork, subject_id: str) -> StaffChange:
        return _get(uow, subject_id)

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return change_content(_get(uow, subject_id))
