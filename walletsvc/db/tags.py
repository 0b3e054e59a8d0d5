"""The row-tag message of every governed row kind, in one place.

A governed row (one that grants power or moves money) carries an HMAC tag over the fields
listed here, encoded with :func:`walletsvc.keys.integrity.encode_message`. The code that tags a
row, the code that checks it before using it and ``walletsvc audit verify`` all build the
message here, so they cannot drift apart. Editing any listed field (in the database, without
the KEK) makes the tag fail.

Changing a message (its label or its fields) invalidates every stored tag of that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement

from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.keys.integrity import Field, encode_message

from .models import ApiToken, PolicyVersion, Withdrawal
from .models_governance import (
    AllowlistEntryRow,
    ApprovalDecision,
    ApprovalRequest,
    PolicyProposal,
    Staff,
)
from .models_staff_auth import StaffChange, StaffPasskey
from .models_treasury import ColdDestinationRow, Refill


def staff_message(row: Staff) -> bytes:
    """Who a staff member is and what they may do (role, groups, enabled)."""
    groups = tuple(sorted(str(g) for g in row.groups))
    return encode_message(
        "staff", row.id, row.username, row.role, groups, row.disabled_at is not None
    )


class TokenFields(Protocol):
    """What a token's tag covers: an ``ApiToken`` row, or the record authentication reads
    without the ORM (walletsvc.db.repositories.tokens)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def token_hash(self) -> str: ...
    @property
    def scopes(self) -> list[Any]: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def cert_fingerprint(self) -> str | None: ...


def api_token_message(row: TokenFields) -> bytes:
    """Which secret (by hash) grants which scopes, and whether it is revoked."""
    scopes = tuple(sorted(str(s) for s in row.scopes))
    fields: list[Field] = [row.id, row.name, row.token_hash, scopes, row.revoked_at is not None]
    # The certificate binding joins the message only when set, so tags made before the
    # column existed stay valid; clearing a binding in SQL changes the message and fails.
    if row.cert_fingerprint is not None:
        fields.append(row.cert_fingerprint)
    return encode_message("api-token", *fields)


def policy_message(row: PolicyVersion) -> bytes:
    """Which policy document (by hash) is in force for a wallet (None: the default policy)."""
    return encode_message("policy", row.wallet_id, row.version, row.status, row.sha256)


def allowlist_entry_message(row: AllowlistEntryRow) -> bytes:
    """A destination a wallet may pay, and from when."""
    return encode_message(
        "allowlist-entry",
        row.id,
        row.wallet_id,
        row.address,
        row.source,
        row.status,
        row.active_since,
    )


def approval_request_message(row: ApprovalRequest) -> bytes:
    """What is to be approved (by content digest), by whom and how many, until when."""
    return encode_message(
        "approval-request",
        row.id,
        row.kind,
        row.subject_id,
        row.required_group,
        row.m,
        row.digest,
        row.requester,
        row.requester_staff_id,
        row.expires_at,
    )


def approval_decision_message(row: ApprovalDecision) -> bytes:
    """One staff member's decision on one request's content, at one TOTP step or with one
    passkey. (A TOTP decision's message is the one from before passkeys, so its stored tags
    still hold.)"""
    fields = [row.request_id, row.staff_id, row.decision, row.digest, row.totp_step]
    if row.passkey_id is not None:
        fields.append(row.passkey_id)
    return encode_message("approval-decision", *fields)


def staff_passkey_message(row: StaffPasskey) -> bytes:
    """Which public key may sign decisions for which staff member, and whether it still may."""
    return encode_message(
        "staff-passkey",
        row.id,
        row.staff_id,
        row.credential_id,
        row.public_key,
        row.disabled_at is not None,
    )


def staff_change_message(row: StaffChange) -> bytes:
    """A governed staff change as asked: whom, to what role and groups, and (an enrolment)
    the new member's first password, by its hash. Its status is not covered: the approval
    request and the signer's own count decide whether it applies."""
    groups = tuple(sorted(str(g) for g in row.groups))
    return encode_message(
        "staff-change",
        row.id,
        row.staff_id,
        row.action,
        row.username,
        row.role,
        groups,
        row.password_hash,
    )


def withdrawal_authorization_message(row: Withdrawal) -> bytes:
    """What an approval binds to: the exact payee and amount of this payout."""
    return authorization_message(row.id, row.wallet_id, row.script_pubkey, row.amount_sat)


def authorization_message(
    withdrawal_id: str, wallet_id: str, script_pubkey: str, amount_sat: int
) -> bytes:
    """``withdrawal_authorization_message`` from the values, before the row exists (a payout
    round inserts its rows in bulk)."""
    return encode_message(
        "withdrawal-authorization", withdrawal_id, wallet_id, script_pubkey, amount_sat
    )


def cold_destination_message(row: ColdDestinationRow) -> bytes:
    """Where sweeps may go: the cold wallet's descriptor, kind and fingerprint."""
    return encode_message(
        "cold-destination",
        row.id,
        row.wallet_id,
        row.kind,
        row.fingerprint,
        row.status,
        row.descriptor,
    )


def policy_time_lock_message(row: PolicyProposal) -> bytes:
    """A loosening approved by its quorum and waiting out its time lock: which document
    replaces which version, and when (by the clock and by the chain) it may apply."""
    return encode_message(
        "policy-time-lock",
        row.id,
        row.wallet_id,
        row.sha256,
        row.base_sha256,
        row.base_version,
        row.direction,
        row.timelock_s,
        row.approval_request_id,
        row.effective_at,
        row.effective_height,
    )


def refill_message(row: Refill) -> bytes:
    """What a refill from cold proposes, as the cold keys' holders are shown it: which cold
    destination pays how much to which hot address, in which exact transaction. (Not its
    status or collected signatures: the signatures are checked against the keys.)"""
    return encode_message(
        "refill",
        row.id,
        row.wallet_id,
        row.cold_destination_id,
        row.amount_sat,
        row.fee_sat,
        row.change_sat,
        row.change_index,
        row.hot_address,
        row.hot_script_pubkey,
        row.txid,
        row.unsigned_tx,
        row.requested_by,
    )


@dataclass(frozen=True)
class GovernedRowKind:
    """One kind of tagged row, for checks that walk them all (``walletsvc audit verify``)."""

    model: type[Any]
    noun: str  # as in "<noun> <id> fails its integrity tag"
    message: Callable[[Any], bytes]
    tag_of: Callable[[Any], str | None]
    name_of: Callable[[Any], str] = lambda row: str(row.id)
    # Only rows matching this carry a tag that must hold (a withdrawal's authorization is
    # tagged when it is approved and means nothing before).
    only: ColumnElement[bool] | None = None


GOVERNED_ROW_KINDS: tuple[GovernedRowKind, ...] = (
    GovernedRowKind(
        PolicyVersion, "policy version", policy_message, lambda r: r.mac, lambda r: str(r.version)
    ),
    GovernedRowKind(
        Withdrawal,
        "approved withdrawal",
        withdrawal_authorization_message,
        lambda r: r.authorization_mac,
        only=Withdrawal.status == WithdrawalStatus.APPROVED.value,
    ),
    GovernedRowKind(Staff, "staff member", staff_message, lambda r: r.mac),
    GovernedRowKind(ApiToken, "API token", api_token_message, lambda r: r.mac),
    GovernedRowKind(ApprovalRequest, "approval request", approval_request_message, lambda r: r.mac),
    GovernedRowKind(
        ApprovalDecision, "approval decision", approval_decision_message, lambda r: r.mac
    ),
    GovernedRowKind(AllowlistEntryRow, "allowlist entry", allowlist_entry_message, lambda r: r.mac),
    GovernedRowKind(
        ColdDestinationRow, "cold destination", cold_destination_message, lambda r: r.mac
    ),
    GovernedRowKind(StaffPasskey, "staff passkey", staff_passkey_message, lambda r: r.mac),
    GovernedRowKind(Refill, "refill", refill_message, lambda r: r.mac),
    GovernedRowKind(
        PolicyProposal,
        "time-locked policy proposal",
        policy_time_lock_message,
        lambda r: r.mac,
        only=PolicyProposal.status == "time_locked",
    ),
    GovernedRowKind(
        StaffChange,
        "open staff change",
        staff_change_message,
        lambda r: r.mac,
        # Only a change still to apply is used (its password hash becomes the member's).
        only=StaffChange.status.in_(("pending_approval", "approved")),
    ),
)
