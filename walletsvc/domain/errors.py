"""Domain errors: exceptions with meaning, mapped to HTTP once, at the edge (walletsvc.api.errors).

Each error carries a stable machine-readable ``code`` and, where one input is to blame, the
``field`` that clients should fix. The HTTP status belongs to the edge, keyed by the class.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """The request is well-formed JSON but a value is unacceptable (amount, address, ...)."""

    code = "invalid_input"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class InvalidAddress(InvalidInput):
    code = "invalid_address"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request clashes with the current state (idempotency key reuse, wrong status, ...)."""

    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_key_reused"


class InvalidTransition(Conflict):
    code = "invalid_state_transition"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class Frozen(DomainError):
    code = "frozen"


class RateLimited(DomainError):
    code = "rate_limited"


class DependencyUnavailable(DomainError):
    """A dependency (database, chain backend, signer) cannot be reached."""

    code = "dependency_unavailable"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"


class SigningRefused(DomainError):
    """The signer's own re-check found the transaction does not match what was approved."""

    code = "signing_refused"


class VerificationFailed(DomainError):
    """libbitcoinkernel refused a script we produced: never broadcast it."""

    code = "verification_failed"


class PolicyDenied(DomainError):
    """The policy engine said no; carries the decision (with its rule trace) for the client."""

    code = "policy_denied"

    def __init__(self, message: str, *, decision: Any, field: str | None) -> None:
        super().__init__(message, field=field)
        self.decision = decision


class RoundDenied(PolicyDenied):
    """The policy denies at least one payout of a payout round, so the round is refused.

    ``payouts`` lists each denied payout: its ``index`` in the request, ``destination``,
    ``amount_sat`` and the ``rules`` it broke (``{rule, result, detail}``).
    """

    def __init__(self, message: str, *, field: str | None, payouts: list[dict[str, Any]]) -> None:
        super().__init__(message, decision=None, field=field)
        self.payouts = payouts


class ChainRejected(DomainError):
    """The chain backend refused a transaction or block."""

    code = "chain_rejected"

    def __init__(self, message: str, *, reason: str = "", field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason


class FeeTooHigh(DomainError):
    """The fee a transaction needs exceeds the cap the caller allows."""

    code = "fee_too_high"


class TooLarge(DomainError):
    """The transaction would exceed the standard weight limit and would not relay."""

    code = "tx_too_large"


class InvalidCredentials(Unauthenticated):
    """Login failed. Never says which of username, password or code was wrong."""

    code = "invalid_credentials"


class AccountLocked(RateLimited):
    """Too many wrong codes or passwords in a row: the staff account is locked for a while."""

    code = "account_locked"


class StepUpFailed(Forbidden):
    """The TOTP code of an approval (or veto) is wrong, or was already used (replay)."""

    code = "invalid_totp"


class StepUpReplayed(StepUpFailed):
    """A TOTP code of a time step this member already used (RFC 6238 section 5.2)."""
