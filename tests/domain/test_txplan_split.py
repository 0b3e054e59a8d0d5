"""largest_fitting_batch: a batch too heavy for one standard transaction, or dearer than the
fee cap, pays its longest leading part that fits, and that part is as long as it can be."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tests.domain.test_txplan import CHANGE, CHANGE_PATH, assert_sound, payout, payouts_of
from walletsvc.domain.errors import FeeTooHigh, InsufficientFunds, TooLarge
from walletsvc.domain.sizes import MAX_STANDARD_TX_WEIGHT, estimate_weight
from walletsvc.domain.transaction import ApprovedPayout, Coin, TransactionPlan
from walletsvc.domain.txplan import largest_fitting_batch, plan_payouts

P2WSH = b"\x00\x20" + b"\x22" * 32  # 43-byte outputs: 172 weight units each


def planner(
    coins: list[Coin], *, rate: int = 1, cap: int = 10_000_000
) -> tuple[list[int], Callable[[Sequence[ApprovedPayout]], TransactionPlan]]:
    tried: list[int] = []

    def plan_for(batch: Sequence[ApprovedPayout]) -> TransactionPlan:
        tried.append(len(batch))
        return plan_payouts(
            coins,
            batch,
            change_script=CHANGE,
            change_path=CHANGE_PATH,
            fee_rate_sat_per_vb=rate,
            max_fee_sat=cap,
            min_confirmations=1,
        )

    return tried, plan_for


def wide(n: int, amount: int = 1_000) -> list[ApprovedPayout]:
    return [payout(f"w{i:05d}", amount, P2WSH) for i in range(n)]


def test_a_batch_that_fits_is_planned_whole_in_one_try(make_coin) -> None:
    tried, plan_for = planner([make_coin(10**9, 1)])
    plan = largest_fitting_batch(plan_for, wide(100))
    assert len(payouts_of(plan)) == 100 and tried == [100]


def test_an_overweight_batch_pays_its_longest_standard_prefix(make_coin) -> None:
    payouts = wide(2_400)  # 2,400 x 172 WU alone is above 400,000
    _, plan_for = planner([make_coin(10**9, 1)])
    with pytest.raises(TooLarge):
        plan_for(payouts)
    plan = largest_fitting_batch(plan_for, payouts)
    assert_sound(plan, 1, 10_000_000)
    count = len(payouts_of(plan))
    assert set(payouts_of(plan)) == {
        (p.withdrawal_id, p.script_pubkey, p.amount_sat) for p in payouts[:count]
    }
    scripts = [o.script_pubkey for o in plan.outputs]
    assert estimate_weight(len(plan.inputs), scripts) <= MAX_STANDARD_TX_WEIGHT
    # As long as it can be: one more payout would not be standard.
    with pytest.raises(TooLarge):
        plan_for(payouts[: count + 1])
    assert 2_200 < count < 2_400


def test_a_batch_dearer_than_the_fee_cap_pays_a_prefix_under_it(make_coin) -> None:
    payouts = wide(1_000)
    cap = 20_000  # at 5 sat/vB, about 460 outputs of 43 bytes
    _, plan_for = planner([make_coin(10**9, 1)], rate=5, cap=cap)
    plan = largest_fitting_batch(plan_for, payouts)
    count = len(payouts_of(plan))
    assert plan.fee_sat <= cap and 0 < count < 1_000
    with pytest.raises(FeeTooHigh):
        plan_for(payouts[: count + 1])


def test_other_failures_are_the_whole_batchs(make_coin) -> None:
    tried, plan_for = planner([make_coin(50_000, 1)])
    with pytest.raises(InsufficientFunds):
        largest_fitting_batch(plan_for, wide(100))
    assert tried == [100]  # not split: fewer payouts would not make the money appear


def test_a_single_payout_that_cannot_fit_is_refused(make_coin) -> None:
    _, plan_for = planner([make_coin(10**9, 1)], rate=5, cap=100)
    with pytest.raises(FeeTooHigh):
        largest_fitting_batch(plan_for, wide(3))
