"""Transaction plans: batched payouts, sweeps and BIP125 replacements."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from walletsvc.domain.coinselect import is_immature_coinbase
from walletsvc.domain.errors import (
    FeeTooHigh,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
)
from walletsvc.domain.money import DUST_LIMIT_SAT
from walletsvc.domain.sizes import (
    MAX_STANDARD_TX_WEIGHT,
    MIN_LIKELY_SIGNATURE_SIZE,
    estimate_vsize,
    estimate_weight,
    max_inputs_within_weight,
)
from walletsvc.domain.transaction import (
    CHANGE_CHAIN,
    RBF_SEQUENCE,
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    TransactionPlan,
)
from walletsvc.domain.txplan import (
    INCREMENTAL_RELAY_FEE_SAT_PER_VB,
    plan_payouts,
    plan_replacement,
    plan_sweep,
)

CHANGE = b"\x00\x14" + b"\xcc" * 20
CHANGE_PATH = KeyPath(0, CHANGE_CHAIN, 3)
COLD = b"\x00\x20" + b"\xee" * 32
SCRIPTS = [
    b"\x00\x14" + b"\x11" * 20,
    b"\x00\x20" + b"\x22" * 32,
    b"\x51\x20" + b"\x33" * 32,
    b"\x76\xa9\x14" + b"\x44" * 20 + b"\x88\xac",
    b"\xa9\x14" + b"\x55" * 20 + b"\x87",
]


def payout(wid: str, amount: int, script: bytes = SCRIPTS[0]) -> ApprovedPayout:
    return ApprovedPayout(withdrawal_id=wid, script_pubkey=script, amount_sat=amount)


def pay(coins: list[Coin], payouts: list[ApprovedPayout], **overrides: object) -> TransactionPlan:
    kwargs: dict[str, object] = {
        "change_script": CHANGE,
        "change_path": CHANGE_PATH,
        "fee_rate_sat_per_vb": 5,
        "max_fee_sat": 100_000,
        "min_confirmations": 1,
    }
    kwargs.update(overrides)
    return plan_payouts(coins, payouts, **kwargs)  # type: ignore[arg-type]


def sweep(coins: list[Coin], keep_sat: int | None = None, **overrides: object) -> TransactionPlan:
    kwargs: dict[str, object] = {
        "destination_script": COLD,
        "keep_sat": keep_sat,
        "fee_rate_sat_per_vb": 5,
        "max_fee_sat": 1_000_000,
        "change_script": CHANGE,
        "change_path": CHANGE_PATH,
        "min_confirmations": 1,
    }
    kwargs.update(overrides)
    return plan_sweep(coins, **kwargs)  # type: ignore[arg-type]


def vsize_of(plan: TransactionPlan) -> int:
    return estimate_vsize(len(plan.inputs), [o.script_pubkey for o in plan.outputs])


def assert_sound(plan: TransactionPlan, rate: int, cap: int) -> None:
    """Invariants every plan must satisfy, whatever produced it."""
    assert plan.input_total == plan.output_total + plan.fee_sat
    assert rate * vsize_of(plan) <= plan.fee_sat <= cap
    assert all(o.amount_sat >= DUST_LIMIT_SAT for o in plan.outputs)
    assert len({c.outpoint for c in plan.inputs}) == len(plan.inputs)
    assert estimate_weight(len(plan.inputs), [o.script_pubkey for o in plan.outputs]) <= (
        MAX_STANDARD_TX_WEIGHT
    )
    assert plan.sequence == RBF_SEQUENCE
    assert list(plan.inputs) == sorted(plan.inputs, key=lambda c: (c.txid, c.vout))
    assert [(o.amount_sat, o.script_pubkey) for o in plan.outputs] == sorted(
        (o.amount_sat, o.script_pubkey) for o in plan.outputs
    )
    for output in plan.outputs:
        if output.purpose is OutputPurpose.CHANGE:
            assert output.key_path is not None
            assert output.withdrawal_id is None


def payouts_of(plan: TransactionPlan) -> Counter[tuple[str | None, bytes, int]]:
    return Counter(
        (o.withdrawal_id, o.script_pubkey, o.amount_sat)
        for o in plan.outputs
        if o.purpose is OutputPurpose.PAYOUT
    )


# --- plan_payouts: tables ---------------------------------------------------------------------


def test_batch_pays_everyone_once_with_change(make_coin) -> None:
    coins = [make_coin(1_000_000, 1), make_coin(300_000, 2)]
    payouts = [payout("w1", 200_000, SCRIPTS[1]), payout("w2", 50_000, SCRIPTS[2])]
    plan = pay(coins, payouts)
    assert_sound(plan, 5, 100_000)
    assert payouts_of(plan) == Counter(
        (p.withdrawal_id, p.script_pubkey, p.amount_sat) for p in payouts
    )
    change = [o for o in plan.outputs if o.purpose is OutputPurpose.CHANGE]
    assert len(change) == 1
    assert change[0].script_pubkey == CHANGE
    assert change[0].key_path == CHANGE_PATH
    assert plan.fee_sat == 5 * vsize_of(plan)
    assert plan.fee_rate_sat_per_vb == 5


def test_locktime_is_carried(make_coin) -> None:
    plan = pay([make_coin(1_000_000, 1)], [payout("w1", 10_000)], locktime=850_000)
    assert plan.locktime == 850_000


@pytest.mark.parametrize("locktime", [-1, 2**32, 1.0])
def test_locktime_out_of_range(make_coin, locktime: object) -> None:
    with pytest.raises(InvalidInput):
        pay([make_coin(1_000_000, 1)], [payout("w1", 10_000)], locktime=locktime)


@pytest.mark.parametrize(
    ("payouts", "error", "field"),
    [
        ([], InvalidInput, "payouts"),
        ([payout("w1", DUST_LIMIT_SAT - 1)], InvalidAmount, "payouts[0].amount_sat"),
        ([payout("w1", 10_000), payout("w2", 0)], InvalidAmount, "payouts[1].amount_sat"),
        ([payout("w1", 10_000), payout("w1", 20_000)], InvalidInput, "payouts[1].withdrawal_id"),
        ([payout("w1", 10_000, CHANGE)], InvalidInput, "payouts[0].script_pubkey"),
        ([payout("w1", 10_000, b"")], InvalidInput, "payouts[0]"),
        ([payout("", 10_000)], InvalidInput, "payouts[0]"),
    ],
)
def test_bad_payouts_are_refused(
    make_coin, payouts: list[ApprovedPayout], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as err:
        pay([make_coin(1_000_000, 1)], payouts)
    assert getattr(err.value, "field", None) == field


def test_fee_cap(make_coin) -> None:
    with pytest.raises(FeeTooHigh):
        pay(
            [make_coin(1_000_000, 1)],
            [payout("w1", 10_000)],
            fee_rate_sat_per_vb=50,
            max_fee_sat=1_000,
        )


def test_insufficient_funds(make_coin) -> None:
    with pytest.raises(InsufficientFunds) as err:
        pay([make_coin(10_000, 1)], [payout("w1", 10_000)])
    assert "need" in err.value.message and "only 10000 sat is spendable" in err.value.message


def test_change_must_use_the_change_chain(make_coin) -> None:
    with pytest.raises(InvalidInput):
        pay([make_coin(1_000_000, 1)], [payout("w1", 10_000)], change_path=KeyPath(0, 0, 1))


def test_identical_payouts_to_one_address_stay_distinct(make_coin) -> None:
    payouts = [payout("w2", 10_000), payout("w1", 10_000)]
    plan = pay([make_coin(1_000_000, 1)], payouts)
    paid = [o.withdrawal_id for o in plan.outputs if o.purpose is OutputPurpose.PAYOUT]
    assert paid == ["w1", "w2"]


# --- plan_payouts: properties -----------------------------------------------------------------


@st.composite
def wallets(draw: st.DrawFn) -> list[Coin]:
    amounts = draw(st.lists(st.integers(1_000, 5_000_000), min_size=1, max_size=20))
    return [
        Coin(
            txid=f"{draw(st.integers(0, 3)):064x}",
            vout=i,
            amount_sat=amount,
            script_pubkey=b"\x00\x14" + bytes([i]) * 20,
            key_path=KeyPath(0, draw(st.sampled_from([0, 1])), i),
            confirmations=draw(st.sampled_from([0, 1, 3, 50, 100, 1_000])),
            is_coinbase=draw(st.integers(0, 4)) == 0,
        )
        for i, amount in enumerate(amounts)
    ]


@st.composite
def batches(draw: st.DrawFn) -> list[ApprovedPayout]:
    n = draw(st.integers(1, 8))
    return [
        ApprovedPayout(
            withdrawal_id=f"w{i}",
            script_pubkey=draw(st.sampled_from(SCRIPTS)),
            amount_sat=draw(st.integers(DUST_LIMIT_SAT, 1_500_000)),
        )
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(
    coins=wallets(),
    payouts=batches(),
    rate=st.integers(1, 80),
    cap=st.one_of(st.integers(1, 5_000), st.integers(5_000, 500_000)),
    min_conf=st.integers(0, 3),
    data=st.data(),
)
def test_payout_plan_invariants(
    coins: list[Coin],
    payouts: list[ApprovedPayout],
    rate: int,
    cap: int,
    min_conf: int,
    data: st.DataObject,
) -> None:
    kwargs = {"fee_rate_sat_per_vb": rate, "max_fee_sat": cap, "min_confirmations": min_conf}
    try:
        plan = pay(coins, payouts, **kwargs)
    except (InsufficientFunds, FeeTooHigh) as exc:
        event(type(exc).__name__)
        return
    event("planned")
    assert_sound(plan, rate, cap)
    # Each payout exactly once, nothing else but our change.
    assert payouts_of(plan) == Counter(
        (p.withdrawal_id, p.script_pubkey, p.amount_sat) for p in payouts
    )
    assert all(
        o.purpose is OutputPurpose.PAYOUT
        or (o.purpose is OutputPurpose.CHANGE and o.script_pubkey == CHANGE)
        for o in plan.outputs
    )
    for coin in plan.inputs:
        assert coin in coins
        assert not is_immature_coinbase(coin)
        assert coin.confirmations >= min_conf
    # Same request in any order (coins and payouts): the very same plan.
    again = pay(
        data.draw(st.permutations(coins), label="coins"),
        data.draw(st.permutations(payouts), label="payouts"),
        **kwargs,
    )
    assert again == plan


# --- plan_sweep -------------------------------------------------------------------------------


def test_sweep_everything_eligible(make_coin) -> None:
    spendable = [make_coin(500_000, 1), make_coin(70_000, 2), make_coin(3_000, 3)]
    left = [
        make_coin(6_000_000, 4, confirmations=10, is_coinbase=True),  # immature
        make_coin(900_000, 5, confirmations=0),  # unconfirmed
        make_coin(300, 6),  # worth less than its fee at 5 sat/vB
    ]
    plan = sweep(spendable + left)
    assert_sound(plan, 5, 1_000_000)
    assert set(plan.inputs) == set(spendable)
    (out,) = plan.outputs
    assert out.purpose is OutputPurpose.SWEEP
    assert out.script_pubkey == COLD
    assert out.amount_sat == 573_000 - plan.fee_sat
    assert plan.fee_sat == 5 * estimate_vsize(3, [COLD])


def test_sweep_keeps_a_float(make_coin) -> None:
    coins = [make_coin(500_000, 1), make_coin(70_000, 2)]
    plan = sweep(coins, keep_sat=100_000)
    assert_sound(plan, 5, 1_000_000)
    by_purpose = {o.purpose: o for o in plan.outputs}
    assert by_purpose[OutputPurpose.CHANGE].amount_sat == 100_000
    assert by_purpose[OutputPurpose.CHANGE].key_path == CHANGE_PATH
    assert by_purpose[OutputPurpose.SWEEP].amount_sat == 470_000 - plan.fee_sat


@pytest.mark.parametrize(
    ("keep", "error"),
    [(DUST_LIMIT_SAT - 1, InvalidAmount), (-5, InvalidAmount), (569_000, InsufficientFunds)],
)
def test_sweep_keep_refusals(make_coin, keep: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        sweep([make_coin(500_000, 1), make_coin(70_000, 2)], keep_sat=keep)


def test_sweep_with_nothing_to_sweep(make_coin) -> None:
    with pytest.raises(InsufficientFunds):
        sweep([make_coin(5_000_000, 1, confirmations=0)])


def test_sweep_fee_cap(make_coin) -> None:
    with pytest.raises(FeeTooHigh):
        sweep([make_coin(5_000_000, i) for i in range(1, 10)], max_fee_sat=1_000)


def test_sweep_stops_at_the_weight_limit(make_coin) -> None:
    coins = [make_coin(10_000 + i, i) for i in range(1, 1_600)]
    plan = sweep(coins, fee_rate_sat_per_vb=1)
    assert_sound(plan, 1, 1_000_000)
    limit = max_inputs_within_weight([COLD])
    assert len(plan.inputs) == limit
    # The largest coins go first; the smallest wait for the next sweep.
    assert min(c.amount_sat for c in plan.inputs) == 10_000 + 1_599 - limit + 1


# --- plan_replacement -------------------------------------------------------------------------


def replacement_floor(original: TransactionPlan, replacement: TransactionPlan) -> int:
    return original.fee_sat + INCREMENTAL_RELAY_FEE_SAT_PER_VB * vsize_of(replacement)


def test_bump_takes_the_fee_from_change(make_coin) -> None:
    original = pay([make_coin(1_000_000, 1)], [payout("w1", 200_000)], fee_rate_sat_per_vb=2)
    bumped = plan_replacement(original, new_fee_rate_sat_per_vb=10, max_fee_sat=100_000)
    assert_sound(bumped, 10, 100_000)
    assert bumped.inputs == original.inputs
    assert payouts_of(bumped) == payouts_of(original)
    assert bumped.fee_sat == 10 * vsize_of(bumped)
    assert bumped.fee_sat >= replacement_floor(original, bumped)


def test_small_bump_pays_at_least_the_relay_increment(make_coin) -> None:
    original = pay([make_coin(1_000_000, 1)], [payout("w1", 200_000)], fee_rate_sat_per_vb=20)
    bumped = plan_replacement(original, new_fee_rate_sat_per_vb=21, max_fee_sat=100_000)
    assert bumped.fee_sat >= replacement_floor(original, bumped)


def test_bump_adds_a_coin_when_change_is_short(make_coin) -> None:
    coin = make_coin(210_000, 1)
    original = pay([coin], [payout("w1", 200_000)], fee_rate_sat_per_vb=2)
    assert any(o.purpose is OutputPurpose.CHANGE for o in original.outputs)
    extra = [make_coin(400_000, 2), make_coin(5_000, 3, confirmations=0)]
    bumped = plan_replacement(
        original, new_fee_rate_sat_per_vb=100, max_fee_sat=100_000, extra_coins=[*extra, coin]
    )
    assert_sound(bumped, 100, 100_000)
    assert set(bumped.inputs) == {coin, extra[0]}
    assert payouts_of(bumped) == payouts_of(original)


def test_bump_without_change_creates_one_when_given_a_script(make_coin) -> None:
    rate = 2
    target = 200_000
    coin = make_coin(target + rate * estimate_vsize(1, [SCRIPTS[0]]), 1)
    original = pay([coin], [payout("w1", target)], fee_rate_sat_per_vb=rate)
    assert all(o.purpose is OutputPurpose.PAYOUT for o in original.outputs)
    extra = [make_coin(400_000, 2)]
    with pytest.raises(FeeTooHigh):  # the whole extra coin would become fee
        plan_replacement(
            original, new_fee_rate_sat_per_vb=5, max_fee_sat=100_000, extra_coins=extra
        )
    bumped = plan_replacement(
        original,
        new_fee_rate_sat_per_vb=5,
        max_fee_sat=100_000,
        extra_coins=extra,
        change_script=CHANGE,
        change_path=CHANGE_PATH,
    )
    assert_sound(bumped, 5, 100_000)
    assert payouts_of(bumped) == payouts_of(original)


def test_bump_needs_money(make_coin) -> None:
    coin = make_coin(201_000, 1)
    original = pay([coin], [payout("w1", 200_000)], fee_rate_sat_per_vb=2)
    with pytest.raises(InsufficientFunds):
        plan_replacement(original, new_fee_rate_sat_per_vb=50, max_fee_sat=100_000)


def test_bump_respects_the_cap(make_coin) -> None:
    original = pay([make_coin(1_000_000, 1)], [payout("w1", 200_000)], fee_rate_sat_per_vb=2)
    with pytest.raises(FeeTooHigh):
        plan_replacement(original, new_fee_rate_sat_per_vb=100, max_fee_sat=original.fee_sat + 10)


def test_bump_must_raise_the_rate(make_coin) -> None:
    original = pay([make_coin(1_000_000, 1)], [payout("w1", 200_000)], fee_rate_sat_per_vb=5)
    with pytest.raises(InvalidInput):
        plan_replacement(original, new_fee_rate_sat_per_vb=5, max_fee_sat=100_000)


def test_bump_refuses_an_unbalanced_original(make_coin) -> None:
    original = pay([make_coin(1_000_000, 1)], [payout("w1", 200_000)], fee_rate_sat_per_vb=5)
    broken = TransactionPlan(
        original.inputs, original.outputs, original.fee_sat + 1, fee_rate_sat_per_vb=5
    )
    with pytest.raises(InvalidInput):
        plan_replacement(broken, new_fee_rate_sat_per_vb=6, max_fee_sat=100_000)


@settings(max_examples=400, deadline=None)
@given(
    coins=wallets(),
    payouts=batches(),
    rate=st.integers(1, 40),
    bump=st.integers(1, 100),
    extra=wallets(),
    cap=st.integers(5_000, 500_000),
)
def test_replacement_invariants(
    coins: list[Coin],
    payouts: list[ApprovedPayout],
    rate: int,
    bump: int,
    extra: list[Coin],
    cap: int,
) -> None:
    try:
        original = pay(
            coins, payouts, fee_rate_sat_per_vb=rate, max_fee_sat=cap, min_confirmations=0
        )
    except (InsufficientFunds, FeeTooHigh):
        return
    extra = [
        Coin(
            f"{0xE0 + i % 4:064x}",
            i,
            c.amount_sat,
            c.script_pubkey,
            c.key_path,
            c.confirmations,
            c.is_coinbase,
        )
        for i, c in enumerate(extra)
    ]
    new_rate = rate + bump
    try:
        bumped = plan_replacement(
            original, new_fee_rate_sat_per_vb=new_rate, max_fee_sat=cap, extra_coins=extra
        )
    except (InsufficientFunds, FeeTooHigh) as exc:
        event(f"bump: {type(exc).__name__}")
        return
    event("bump: with extra coins" if len(bumped.inputs) > len(original.inputs) else "bumped")
    assert_sound(bumped, new_rate, cap)
    # Every payout kept, none invented; only the change may differ.
    assert payouts_of(bumped) == payouts_of(original)
    assert {o.purpose for o in bumped.outputs} <= {OutputPurpose.PAYOUT, OutputPurpose.CHANGE}
    # Conflicts with the original on every input; added inputs are confirmed and mature.
    assert set(original.inputs) <= set(bumped.inputs)
    for coin in set(bumped.inputs) - set(original.inputs):
        assert coin in extra
        assert coin.confirmations >= 1
        assert not is_immature_coinbase(coin)
    # BIP125 rules 3 and 4, and a strictly higher fee rate than the original (rule 6).
    assert bumped.fee_sat >= replacement_floor(original, bumped)
    assert bumped.fee_sat > original.fee_sat
    old_vsize = estimate_vsize(
        len(original.inputs),
        [o.script_pubkey for o in original.outputs],
        signature_size=MIN_LIKELY_SIGNATURE_SIZE,
    )
    assert bumped.fee_sat * old_vsize > original.fee_sat * vsize_of(bumped)
    assert bumped.locktime == original.locktime
