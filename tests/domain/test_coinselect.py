"""Coin selection and size estimation: table tests for the rules, properties for the invariants."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from walletsvc.domain.coinselect import (
    COINBASE_MATURITY,
    Selection,
    is_immature_coinbase,
    select_coins,
)
from walletsvc.domain.errors import FeeTooHigh, InsufficientFunds, InvalidInput, TooLarge
from walletsvc.domain.money import DUST_LIMIT_SAT
from walletsvc.domain.sizes import (
    MAX_STANDARD_TX_WEIGHT,
    P2WPKH_INPUT_VSIZE,
    estimate_vsize,
    estimate_weight,
    max_inputs_within_weight,
    output_size,
    varint_size,
)
from walletsvc.domain.transaction import CHANGE_CHAIN, RECEIVE_CHAIN, Coin, KeyPath

P2WPKH = b"\x00\x14" + b"\x11" * 20
P2WSH = b"\x00\x20" + b"\x22" * 32
P2TR = b"\x51\x20" + b"\x33" * 32
P2PKH = b"\x76\xa9\x14" + b"\x44" * 20 + b"\x88\xac"
P2SH = b"\xa9\x14" + b"\x55" * 20 + b"\x87"
CHANGE = b"\x00\x14" + b"\xcc" * 20


def select(coins: list[Coin], target: int, **overrides: object) -> Selection:
    kwargs: dict[str, object] = {
        "target_sat": target,
        "fee_rate_sat_per_vb": 2,
        "output_scripts": [P2WPKH],
        "change_script": CHANGE,
        "min_confirmations": 1,
        "max_fee_sat": 1_000_000,
    }
    kwargs.update(overrides)
    return select_coins(coins, **kwargs)  # type: ignore[arg-type]


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "size"),
    [(P2WPKH, 31), (P2WSH, 43), (P2TR, 43), (P2PKH, 34), (P2SH, 32), (b"\x6a" * 253, 264)],
)
def test_output_size(script: bytes, size: int) -> None:
    assert output_size(script) == size


@pytest.mark.parametrize(
    ("n", "size"), [(0, 1), (252, 1), (253, 3), (0xFFFF, 3), (0x10000, 5), (2**32, 9)]
)
def test_varint_size(n: int, size: int) -> None:
    assert varint_size(n) == size


@pytest.mark.parametrize(
    ("n_inputs", "scripts", "weight", "vsize"),
    [
        # 1-in/1-out and 1-in/2-out P2WPKH: the textbook 110 and 141 vB (72-byte signatures).
        (1, [P2WPKH], 438, 110),
        (1, [P2WPKH, P2WPKH], 562, 141),
        (2, [P2TR, P2WPKH], 4 * (4 + 1 + 82 + 1 + 43 + 31 + 4) + 2 + 2 * 108, 221),
    ],
)
def test_known_sizes(n_inputs: int, scripts: list[bytes], weight: int, vsize: int) -> None:
    assert estimate_weight(n_inputs, scripts) == weight
    assert estimate_vsize(n_inputs, scripts) == vsize


def test_input_count_varint_is_counted() -> None:
    # Going from 252 to 253 inputs grows the count's varint from 1 to 3 bytes.
    step = estimate_weight(253, [P2WPKH]) - estimate_weight(252, [P2WPKH])
    assert step == 4 * P2WPKH_INPUT_VSIZE + 4 * 2


def test_max_inputs_within_weight() -> None:
    n = max_inputs_within_weight([P2WPKH, CHANGE])
    assert estimate_weight(n, [P2WPKH, CHANGE]) <= MAX_STANDARD_TX_WEIGHT
    assert estimate_weight(n + 1, [P2WPKH, CHANGE]) > MAX_STANDARD_TX_WEIGHT
    assert max_inputs_within_weight([P2WPKH] * 20_000) == 0


def _signed_weight(n_inputs: int, scripts: list[bytes]) -> int:
    """Weight of a really signed embit transaction spending P2WPKH inputs."""
    from embit.ec import PrivateKey
    from embit.script import Script, Witness, p2wpkh
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    key = PrivateKey(hashlib.sha256(b"sizes").digest())
    spk = p2wpkh(key.get_public_key())
    script_code = Script(b"\x76\xa9\x14" + spk.data[2:] + b"\x88\xac")
    vin = [TransactionInput(i.to_bytes(32, "big"), i, sequence=0xFFFFFFFD) for i in range(n_inputs)]
    vout = [TransactionOutput(10_000, Script(s)) for s in scripts]
    tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
    stripped = len(tx.serialize())
    for i in range(n_inputs):
        sig = key.sign(tx.sighash_segwit(i, script_code, 50_000)).serialize() + b"\x01"
        tx.vin[i].witness = Witness([sig, key.get_public_key().sec()])
    return 3 * stripped + len(tx.serialize())


@pytest.mark.parametrize(
    ("n_inputs", "scripts"),
    [(1, [P2WPKH]), (3, [P2TR, P2WPKH]), (5, [P2PKH, P2SH, P2WSH, P2WPKH]), (260, [P2WPKH])],
)
def test_estimate_bounds_a_really_signed_transaction(n_inputs: int, scripts: list[bytes]) -> None:
    real = _signed_weight(n_inputs, scripts)
    estimated = estimate_weight(n_inputs, scripts)
    # Never below the real weight; above only by the signature bytes we assumed worst-case.
    assert real <= estimated <= real + 2 * n_inputs


# --- eligibility -------------------------------------------------------------------------------


def test_immature_coinbase_is_never_selected(make_coin) -> None:
    immature = make_coin(10_000_000, 1, confirmations=COINBASE_MATURITY - 1, is_coinbase=True)
    small = make_coin(60_000, 2)
    with pytest.raises(InsufficientFunds) as err:
        select([immature, small], 100_000)
    assert "10000000 sat immature coinbase" in err.value.message
    assert is_immature_coinbase(immature)


def test_coinbase_at_maturity_is_spendable(make_coin) -> None:
    mature = make_coin(10_000_000, 1, confirmations=COINBASE_MATURITY, is_coinbase=True)
    assert select([mature], 100_000).coins == (mature,)


def test_coins_below_min_confirmations_are_not_selected(make_coin) -> None:
    young = make_coin(10_000_000, 1, confirmations=2)
    old = make_coin(200_000, 2, confirmations=3)
    assert select([young, old], 100_000, min_confirmations=3).coins == (old,)
    with pytest.raises(InsufficientFunds) as err:
        select([young, old], 1_000_000, min_confirmations=3)
    assert "10000000 sat with fewer than 3 confirmations" in err.value.message


def test_unconfirmed_change_only_with_the_flag(make_coin) -> None:
    change = make_coin(10_000_000, 1, confirmations=0, chain=CHANGE_CHAIN)
    foreign = make_coin(10_000_000, 2, confirmations=0, chain=RECEIVE_CHAIN)
    with pytest.raises(InsufficientFunds):
        select([change, foreign], 100_000)
    chosen = select([change, foreign], 100_000, allow_unconfirmed_change=True)
    assert chosen.coins == (change,)


def test_confirmed_coins_are_preferred(make_coin) -> None:
    change = make_coin(10_000_000, 1, confirmations=0, chain=CHANGE_CHAIN)
    confirmed = make_coin(300_000, 2)
    chosen = select([change, confirmed], 100_000, allow_unconfirmed_change=True)
    assert chosen.coins == (confirmed,)
    # ...and unconfirmed change only tops up when confirmed coins are not enough.
    chosen = select([change, confirmed], 1_000_000, allow_unconfirmed_change=True)
    assert change in chosen.coins


def test_non_p2wpkh_coins_are_not_selected(make_coin) -> None:
    taproot = make_coin(10_000_000, 1, script=P2TR)
    with pytest.raises(InsufficientFunds) as err:
        select([taproot], 100_000)
    assert "10000000 sat in non-P2WPKH coins" in err.value.message


def test_uneconomic_coins_are_skipped(make_coin) -> None:
    # At 10 sat/vB an input costs 680 sat: a 600-sat coin only loses money.
    dust = [make_coin(600, i) for i in range(1, 50)]
    with pytest.raises(InsufficientFunds):
        select(dust, 1_000, fee_rate_sat_per_vb=10)


def test_duplicate_outpoints_are_refused(make_coin) -> None:
    coin = make_coin(100_000, 1)
    with pytest.raises(InvalidInput):
        select([coin, coin], 10_000)


@pytest.mark.parametrize("rate", [0, -1, 1.5, True])
def test_fee_rate_must_be_a_positive_integer(make_coin, rate: object) -> None:
    with pytest.raises(InvalidInput):
        select([make_coin(100_000, 1)], 10_000, fee_rate_sat_per_vb=rate)


# --- strategy ----------------------------------------------------------------------------------


def test_insufficient_funds_names_needed_and_available(make_coin) -> None:
    with pytest.raises(InsufficientFunds) as err:
        select([make_coin(50_000, 1), make_coin(40_000, 2)], 100_000, fee_rate_sat_per_vb=1)
    message = err.value.message
    assert "need 100178 sat" in message  # 100000 + 178 vB (2 inputs, 1 output) x 1 sat/vB
    assert "only 90000 sat is spendable" in message
    assert err.value.code == "insufficient_funds"


def test_exact_match_is_found_without_change(make_coin) -> None:
    rate = 3
    target = 100_000
    fee = rate * estimate_vsize(2, [P2WPKH])
    exact_pair = [make_coin(60_000, 1), make_coin(target + fee - 60_000, 2)]
    big = make_coin(5_000_000, 3)
    chosen = select([big, *exact_pair], target, fee_rate_sat_per_vb=rate)
    assert set(chosen.coins) == set(exact_pair)
    assert chosen.change_sat == 0
    assert chosen.fee_sat == fee


def test_changeless_excess_is_bounded_by_the_cost_of_change(make_coin) -> None:
    rate = 5
    target = 100_000
    fee = rate * estimate_vsize(1, [P2WPKH])
    cost_of_change = rate * (output_size(CHANGE) + P2WPKH_INPUT_VSIZE)
    near = make_coin(target + fee + cost_of_change, 1)
    chosen = select([near], target, fee_rate_sat_per_vb=rate)
    assert chosen.change_sat == 0
    assert chosen.fee_sat == fee + cost_of_change
    far = make_coin(target + fee + cost_of_change + 1_000, 2)
    assert select([far], target, fee_rate_sat_per_vb=rate).change_sat > 0


def test_dust_change_goes_to_the_fee(make_coin) -> None:
    rate = 1
    target = 100_000
    fee_with_change = rate * estimate_vsize(1, [P2WPKH, CHANGE])
    # Would leave 500 sat of change (dust), and is beyond BnB's window at 1 sat/vB.
    coin = make_coin(target + fee_with_change + 500, 1)
    chosen = select([coin], target, fee_rate_sat_per_vb=rate)
    assert chosen.change_sat == 0
    assert chosen.fee_sat == coin.amount_sat - target


def test_dust_change_over_the_cap_adds_a_coin(make_coin) -> None:
    rate = 1
    target = 100_000
    fee_with_change = rate * estimate_vsize(1, [P2WPKH, CHANGE])
    first = make_coin(target + fee_with_change + 500, 1)
    second = make_coin(20_000, 2)
    chosen = select([first, second], target, fee_rate_sat_per_vb=rate, max_fee_sat=400)
    assert chosen.coins == tuple(sorted([first, second], key=lambda c: c.txid))
    assert chosen.change_sat >= DUST_LIMIT_SAT
    assert chosen.fee_sat <= 400


def test_fee_above_the_cap_is_refused(make_coin) -> None:
    with pytest.raises(FeeTooHigh) as err:
        select([make_coin(10_000_000, 1)], 100_000, fee_rate_sat_per_vb=100, max_fee_sat=5_000)
    assert err.value.code == "fee_too_high"


def test_too_many_outputs_for_one_transaction(make_coin) -> None:
    outputs = [P2WPKH] * 3_300
    with pytest.raises(TooLarge):
        select([make_coin(10**12, 1)], 3_300 * 1_000, output_scripts=outputs)


def test_too_many_inputs_for_one_transaction(make_coin) -> None:
    coins = [make_coin(10_000, i) for i in range(1, 1_600)]
    with pytest.raises(TooLarge):
        select(coins, 15_000_000, fee_rate_sat_per_vb=1, max_fee_sat=10**8)


# --- properties --------------------------------------------------------------------------------


@st.composite
def wallets(draw: st.DrawFn) -> list[Coin]:
    amounts = draw(st.lists(st.integers(1, 3_000_000), min_size=0, max_size=30))
    coins = []
    for i, amount in enumerate(amounts):
        coins.append(
            Coin(
                txid=f"{draw(st.integers(0, 5)):064x}",  # shared txids: ties broken by vout
                vout=i,
                amount_sat=amount,
                script_pubkey=b"\x00\x14" + bytes([i]) * 20,
                key_path=KeyPath(0, draw(st.sampled_from([0, 1])), i),
                confirmations=draw(st.sampled_from([0, 1, 6, 99, 100, 500])),
                is_coinbase=draw(st.integers(0, 3)) == 0,
            )
        )
    return coins


def eligible(coin: Coin, min_conf: int, allow_change: bool) -> bool:
    if is_immature_coinbase(coin):
        return False
    if coin.confirmations >= min_conf:
        return True
    return allow_change and coin.key_path.chain == CHANGE_CHAIN


@settings(max_examples=500, deadline=None)
@given(
    coins=wallets(),
    rate=st.integers(1, 60),
    n_outputs=st.integers(1, 4),
    cap=st.one_of(st.integers(0, 5_000), st.integers(5_000, 200_000), st.just(10**7)),
    min_conf=st.integers(0, 3),
    allow_change=st.booleans(),
    data=st.data(),
)
def test_selection_invariants(
    coins: list[Coin],
    rate: int,
    n_outputs: int,
    cap: int,
    min_conf: int,
    allow_change: bool,
    data: st.DataObject,
) -> None:
    scripts = [P2TR, P2WPKH, P2PKH, P2WSH][:n_outputs]
    wealth = sum(c.amount_sat for c in coins)
    target = data.draw(st.integers(DUST_LIMIT_SAT, max(DUST_LIMIT_SAT, wealth)), label="target")
    kwargs = {
        "fee_rate_sat_per_vb": rate,
        "output_scripts": scripts,
        "min_confirmations": min_conf,
        "max_fee_sat": cap,
        "allow_unconfirmed_change": allow_change,
    }
    try:
        chosen = select(coins, target, **kwargs)
    except (InsufficientFunds, FeeTooHigh) as exc:
        event(type(exc).__name__)
        return
    event("with change" if chosen.has_change else "changeless")

    assert all(eligible(c, min_conf, allow_change) for c in chosen.coins)
    assert len(set(c.outpoint for c in chosen.coins)) == len(chosen.coins)
    # Conservation, to the satoshi.
    assert chosen.input_total == target + chosen.change_sat + chosen.fee_sat
    outputs = [*scripts, CHANGE] if chosen.has_change else scripts
    vsize = estimate_vsize(len(chosen.coins), outputs)
    assert chosen.vsize == vsize
    assert rate * vsize <= chosen.fee_sat <= cap
    assert chosen.change_sat == 0 or chosen.change_sat >= DUST_LIMIT_SAT
    # Determinism: any order of the same coins gives the same selection.
    shuffled = data.draw(st.permutations(coins))
    assert select(shuffled, target, **kwargs) == chosen


@settings(max_examples=100, deadline=None)
@given(coins=wallets(), target=st.integers(DUST_LIMIT_SAT, 5_000_000), rate=st.integers(1, 30))
def test_enough_funds_are_found(coins: list[Coin], target: int, rate: int) -> None:
    """With no fee cap, selection fails only when even every usable coin is not enough."""
    usable = [
        c for c in coins if eligible(c, 1, False) and c.amount_sat > rate * P2WPKH_INPUT_VSIZE
    ]
    total = sum(c.amount_sat for c in usable)
    try:
        select(coins, target, fee_rate_sat_per_vb=rate, max_fee_sat=10**9)
    except InsufficientFunds:
        assert total < target + rate * estimate_vsize(max(len(usable), 1), [P2WPKH])


def test_branch_and_bound_handles_many_equal_coins(make_coin) -> None:
    rate = 4
    coins = [make_coin(10_000, i) for i in range(1, 400)]
    target = 5 * 10_000 - rate * estimate_vsize(5, [P2WPKH])
    chosen = select(coins, target, fee_rate_sat_per_vb=rate)
    assert len(chosen.coins) == 5
    assert chosen.change_sat == 0
    assert chosen.fee_sat == rate * estimate_vsize(5, [P2WPKH])


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(st.integers(5_000, 2_000_000), min_size=1, max_size=14),
    rate=st.integers(1, 50),
    data=st.data(),
)
def test_exact_subsets_are_found_changeless(
    amounts: list[int], rate: int, data: st.DataObject
) -> None:
    coins = [
        Coin(f"{i:064x}", 0, a, b"\x00\x14" + bytes([i]) * 20, KeyPath(0, 0, i), 6)
        for i, a in enumerate(amounts)
    ]
    subset = data.draw(st.lists(st.sampled_from(coins), min_size=1, unique=True), label="subset")
    fee = rate * estimate_vsize(len(subset), [P2WPKH])
    target = sum(c.amount_sat for c in subset) - fee
    if target <= 0:
        return
    chosen = select(coins, target, fee_rate_sat_per_vb=rate)
    assert chosen.change_sat == 0
    # The search prefers the cheapest hit, and the planted subset is one.
    assert chosen.fee_sat <= fee
