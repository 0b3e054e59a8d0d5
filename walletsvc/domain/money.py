"""Amounts are integer satoshis. Nothing else is accepted as money anywhere in the service."""

from __future__ import annotations

from .errors import InvalidAmount

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
# Outputs below this are non-standard for P2WPKH-sized outputs at Bitcoin Core's default dust
# relay fee (3 sat/vB); we use one conservative limit for every output type we pay to.
DUST_LIMIT_SAT = 546


def require_satoshis(value: object, *, field: str = "amount_sat", allow_zero: bool = False) -> int:
    """Return ``value`` as satoshis or raise InvalidAmount naming ``field``.

    Only a real ``int`` is money: bools, floats (even 1.0) and strings are refused, because a
    float or a decimal string already lost or invented precision somewhere upstream.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"{field} must be an integer number of satoshis, got {type(value).__name__}",
            field=field,
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidAmount(f"{field} must be greater than zero", field=field)
    if value > MAX_MONEY:
        raise InvalidAmount(f"{field} exceeds the 21 million BTC supply", field=field)
    return value


def require_payable(value: object, *, field: str = "amount_sat") -> int:
    """Like require_satoshis, and above the dust limit so that the output can be relayed."""
    amount = require_satoshis(value, field=field)
    if amount < DUST_LIMIT_SAT:
        raise InvalidAmount(
            f"{field} {amount} is below the dust limit of {DUST_LIMIT_SAT} sat", field=field
        )
    return amount
