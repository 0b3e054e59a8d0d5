"""Money is an int of satoshis, and nothing else."""

from __future__ import annotations

import pytest

from walletsvc.domain.errors import InvalidAmount
from walletsvc.domain.money import (
    COIN,
    DUST_LIMIT_SAT,
    MAX_MONEY,
    require_payable,
    require_satoshis,
)

NOT_INTEGERS = [1.0, 1.5, "100", "1.5", True, False, None, b"1", 10**8 * 1.0]


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_only_ints_are_satoshis(value: object) -> None:
    with pytest.raises(InvalidAmount) as err:
        require_satoshis(value, field="amount_sat")
    assert err.value.field == "amount_sat"
    assert "integer number of satoshis" in err.value.message


@pytest.mark.parametrize(
    ("value", "allow_zero", "message"),
    [
        (-1, False, "greater than zero"),
        (-1, True, "greater than zero"),
        (0, False, "greater than zero"),
        (MAX_MONEY + 1, False, "21 million"),
    ],
)
def test_out_of_range(value: int, allow_zero: bool, message: str) -> None:
    with pytest.raises(InvalidAmount) as err:
        require_satoshis(value, field="fee_sat", allow_zero=allow_zero)
    assert err.value.field == "fee_sat"
    assert message in err.value.message
    assert err.value.code == "invalid_amount"


@pytest.mark.parametrize(
    ("value", "allow_zero"),
    [(1, False), (0, True), (DUST_LIMIT_SAT - 1, False), (COIN, False), (MAX_MONEY, False)],
)
def test_valid_satoshis(value: int, allow_zero: bool) -> None:
    assert require_satoshis(value, allow_zero=allow_zero) == value


@pytest.mark.parametrize("value", [*NOT_INTEGERS, -1, 0, 1, DUST_LIMIT_SAT - 1, MAX_MONEY + 1])
def test_unpayable(value: object) -> None:
    with pytest.raises(InvalidAmount) as err:
        require_payable(value, field="payouts[0].amount_sat")
    assert err.value.field == "payouts[0].amount_sat"


def test_dust_is_named() -> None:
    with pytest.raises(InvalidAmount) as err:
        require_payable(DUST_LIMIT_SAT - 1)
    assert "below the dust limit of 546 sat" in err.value.message


@pytest.mark.parametrize("value", [DUST_LIMIT_SAT, 100_000, COIN, MAX_MONEY])
def test_payable(value: int) -> None:
    assert require_payable(value) == value
