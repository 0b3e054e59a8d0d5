"""What the signer knows of people: its staff registry and the decisions it verified itself.

The signer counts approvals only from its own ledger. A decision enters it only after the
signer checked the step-up itself (a TOTP code against the secret sealed under *its* key,
accepted once per member and time step, or a passkey assertion over the content digest), so
a database writer or the API host cannot forge a quorum: they can relay a member's code to
other content (TOTP binds to no content; a passkey does), never invent one.

Record types folded here (registered in :mod:`walletsvc.signer.state`):

* ``staff``: a member enrolled or changed: ``{staff_id, username, role, groups,
  sealed_totp, source, evidence?}``; ``sealed_totp`` is under the signer key's seed vault,
  never clear; ``evidence`` (after genesis) is the digest of the quorum-approved content that
  allowed it, used once.
* ``staff_disabled``: ``{staff_id}``; a disabled member's decisions stop counting at once.
* ``totp_used``: ``{staff_id, step}``; a code is accepted once per member and step.
* ``passkey`` / ``passkey_removed``: ``{staff_id, credential_id, public_key, sign_count}``.
* ``decision``: ``{staff_id, kind, digest, decision, proof}``; ``digest`` is
  ``content_digest(content)`` of the exact content the member reviewed, checked by the
  signer when it recorded the decision.
* ``genesis_closed``: ``{}``; until then staff may be enrolled without quorum evidence (the
  first staff list is trusted like the first policy: docs/threat-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STAFF = "staff"
STAFF_DISABLED = "staff_disabled"
TOTP_USED = "totp_used"
PASSKEY = "passkey"
PASSKEY_REMOVED = "passkey_removed"
DECISION = "decision"
GENESIS_CLOSED = "genesis_closed"


@dataclass
class StaffEntry:
    staff_id: str
    username: str
    role: str
    groups: frozenset[str]
    sealed_totp: str | None
    enabled: bool = True
    last_totp_step: int | None = None
    passkeys: dict[str, dict[str, Any]] = field(default_factory=dict)  # credential id -> body


@dataclass(frozen=True)
class RecordedDecision:
    staff_id: str
    kind: str
    digest: str
    decision: str  # "approve" | "reject"
    proof: str  # "totp" | "passkey"
    at: datetime


@dataclass
class Evidence:
    """The fold of the records above (part of :class:`walletsvc.signer.state.SignerState`)."""

    staff: dict[str, StaffEntry] = field(default_factory=dict)
    decisions: dict[str, list[RecordedDecision]] = field(default_factory=dict)  # by digest
    genesis_open: bool = True
    consumed: set[str] = field(default_factory=set)  # evidence digests an enrolment used

    def eligible(self, staff_id: str, group: str, excluded: frozenset[str]) -> bool:
        entry = self.staff.get(staff_id)
        return (
            entry is not None
            and entry.enabled
            and entry.role == "approver"
            and group in entry.groups
            and staff_id not in excluded
        )

    def quorum_reached_at(
        self,
        *,
        kind: str,
        digest: str,
        group: str,
        m: int,
        excluded: frozenset[str] = frozenset(),
    ) -> datetime | None:
        """When ``m`` distinct eligible members (enabled *now*, approvers in ``group``) had
        approved exactly ``digest`` for ``kind``; None if they have not, or if an eligible
        member rejected it. One person counts once."""
        approvers: dict[str, datetime] = {}
        for d in self.decisions.get(digest, []):
            if d.kind != kind or not self.eligible(d.staff_id, group, excluded):
                continue
            if d.decision == "reject":
                return None
            approvers.setdefault(d.staff_id, d.at)
        if len(approvers) < m:
            return None
        return sorted(approvers.values())[m - 1]


def _staff(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    earlier = ev.staff.get(body["staff_id"])
    ev.staff[body["staff_id"]] = StaffEntry(
        staff_id=body["staff_id"],
        username=body["username"],
        role=body["role"],
        groups=frozenset(body["groups"]),
        sealed_totp=body.get("sealed_totp") or (earlier.sealed_totp if earlier else None),
        enabled=True,
        last_totp_step=earlier.last_totp_step if earlier else None,
        passkeys=earlier.passkeys if earlier else {},
    )
    if body.get("evidence"):
        ev.consumed.add(body["evidence"])


def _staff_disabled(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    entry = ev.staff.get(body["staff_id"])
    if entry is not None:
        entry.enabled = False


def _totp_used(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    entry = ev.staff[body["staff_id"]]
    entry.last_totp_step = max(body["step"], entry.last_totp_step or body["step"])


def _passkey(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    ev.staff[body["staff_id"]].passkeys[body["credential_id"]] = dict(body)


def _passkey_removed(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    entry = ev.staff.get(body["staff_id"])
    if entry is not None:
        entry.passkeys.pop(body["credential_id"], None)


def _decision(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    ev.decisions.setdefault(body["digest"], []).append(
        RecordedDecision(
            staff_id=body["staff_id"],
            kind=body["kind"],
            digest=body["digest"],
            decision=body["decision"],
            proof=body["proof"],
            at=at,
        )
    )


def _genesis_closed(ev: Evidence, body: dict[str, Any], at: datetime) -> None:
    ev.genesis_open = False


HANDLERS = {
    STAFF: _staff,
    STAFF_DISABLED: _staff_disabled,
    TOTP_USED: _totp_used,
    PASSKEY: _passkey,
    PASSKEY_REMOVED: _passkey_removed,
    DECISION: _decision,
    GENESIS_CLOSED: _genesis_closed,
}
