"""The withdrawal (payout) state machine.

    pending_approval -> approved -> signed -> broadcast -> confirmed
           |               |          |          ^  (a reorg can send confirmed back to broadcast)
           v               v          v
    rejected/expired/  cancelled    failed
    cancelled

Only these transitions exist; anything else is a bug or a tampered row and raises.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidTransition


class WithdrawalStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


S = WithdrawalStatus

ALLOWED_TRANSITIONS: dict[WithdrawalStatus, frozenset[WithdrawalStatus]] = {
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.APPROVED: frozenset({S.SIGNED, S.CANCELLED, S.REJECTED, S.FAILED}),
    # A signed payout whose transaction is replaced (fee bump, key rotation) is re-signed.
    S.SIGNED: frozenset({S.BROADCAST, S.SIGNED, S.FAILED}),
    S.BROADCAST: frozenset({S.CONFIRMED, S.SIGNED}),
    S.CONFIRMED: frozenset({S.BROADCAST}),  # reorganisation only
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset(),
}

# Statuses in which a payout still holds (or has spent) money: velocity limits count them.
HOLDING_STATUSES = frozenset({S.PENDING_APPROVAL, S.APPROVED, S.SIGNED, S.BROADCAST, S.CONFIRMED})
CANCELLABLE_STATUSES = frozenset({S.PENDING_APPROVAL, S.APPROVED})


def transition(current: str | WithdrawalStatus, target: WithdrawalStatus) -> WithdrawalStatus:
    """Return ``target`` if the state machine allows current -> target, else raise."""
    source = WithdrawalStatus(current)
    if target not in ALLOWED_TRANSITIONS[source]:
        raise InvalidTransition(
            f"a withdrawal cannot go from {source.value} to {target.value}", field="status"
        )
    return target
