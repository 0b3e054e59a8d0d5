"""Deterministic coin selection for P2WPKH hot-wallet coins.

Given the same coins (in any order) and the same request, the result is the same: coins are
ordered by effective value with ties broken by outpoint, and every search is bounded.

The strategy, per eligibility tier (confirmed coins first, then our own unconfirmed change if
the caller allows it):

1. branch and bound for a changeless solution whose excess over the exact fee is no more than
   the cost of creating and later spending a change output (the excess goes to the miner);
2. otherwise accumulate coins largest-first until they cover the payouts plus the fee of a
   transaction with change. Change below the dust limit is given to the fee if the fee cap
   allows, else one more coin is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import FeeTooHigh, InsufficientFunds, InvalidInput, TooLarge
from .money import DUST_LIMIT_SAT, MAX_MONEY
from .sizes import (
    P2WPKH_INPUT_VSIZE,
    estimate_vsize,
    max_inputs_within_weight,
    output_size,
)
from .transaction import CHANGE_CHAIN, Coin

# Consensus: a coinbase output can be spent once it has 100 confirmations (its spender then
# lands at least 100 blocks later). Spending it earlier makes the whole transaction invalid.
COINBASE_MATURITY = 100
# Bitcoin Core's bound for its branch-and-bound search; enough for realistic hot wallets.
BNB_MAX_TRIES = 100_000


@dataclass(frozen=True)
class Selection:
    """Coins chosen for a transaction, the fee it pays and its change (0: no change output)."""

    coins: tuple[Coin, ...]
    fee_sat: int
    change_sat: int
    vsize: int

    @property
    def input_total(self) -> int:
        return sum(c.amount_sat for c in self.coins)

    @property
    def has_change(self) -> bool:
        return self.change_sat > 0


@dataclass(frozen=True)
class _Request:
    target_sat: int
    fee_rate: int
    output_scripts: tuple[bytes, ...]
    change_script: bytes
    max_fee_sat: int
    max_inputs: int


def is_p2wpkh(script: bytes) -> bool:
    return len(script) == 22 and script[0] == 0x00 and script[1] == 0x14


def is_immature_coinbase(coin: Coin) -> bool:
    return coin.is_coinbase and coin.confirmations < COINBASE_MATURITY


def effective_value(coin: Coin, fee_rate_sat_per_vb: int) -> int:
    """What a coin adds to a transaction once the fee for spending it is paid."""
    return coin.amount_sat - fee_rate_sat_per_vb * P2WPKH_INPUT_VSIZE


def selection_order(coins: Iterable[Coin]) -> list[Coin]:
    """Largest first; equal amounts by outpoint, so the input order of ``coins`` never matters."""
    return sorted(coins, key=lambda c: (-c.amount_sat, c.txid, c.vout))


def canonical_order(coins: Iterable[Coin]) -> tuple[Coin, ...]:
    """BIP69 input order: previous txid (as displayed), then output index."""
    return tuple(sorted(coins, key=lambda c: (c.txid.lower(), c.vout)))


def check_coins(coins: Sequence[Coin]) -> None:
    """Refuse malformed candidates: a duplicated outpoint would be counted twice."""
    seen: set[tuple[str, int]] = set()
    for coin in coins:
        outpoint = (coin.txid.lower(), coin.vout)
        if outpoint in seen:
            raise InvalidInput(f"coin {coin.txid}:{coin.vout} is listed twice", field="coins")
        seen.add(outpoint)
        if isinstance(coin.amount_sat, bool) or not isinstance(coin.amount_sat, int):
            raise InvalidInput(f"coin {coin.txid}:{coin.vout} amount is not satoshis")
        if not 0 < coin.amount_sat <= MAX_MONEY:
            raise InvalidInput(f"coin {coin.txid}:{coin.vout} amount is out of range")


def check_fee_rate(fee_rate_sat_per_vb: object) -> int:
    if isinstance(fee_rate_sat_per_vb, bool) or not isinstance(fee_rate_sat_per_vb, int):
        raise InvalidInput("fee rate must be an integer sat/vB", field="fee_rate_sat_per_vb")
    # Below 1 sat/vB Bitcoin Core's default min relay fee refuses the transaction.
    if fee_rate_sat_per_vb < 1:
        raise InvalidInput("fee rate must be at least 1 sat/vB", field="fee_rate_sat_per_vb")
    return fee_rate_sat_per_vb


@dataclass(frozen=True)
class Eligibility:
    """Candidates split by why they may or may not be spent now."""

    confirmed: tuple[Coin, ...]
    unconfirmed_change: tuple[Coin, ...]
    immature: tuple[Coin, ...]
    unconfirmed: tuple[Coin, ...]
    unsupported: tuple[Coin, ...]


def classify(
    coins: Iterable[Coin], *, min_confirmations: int, allow_unconfirmed_change: bool = False
) -> Eligibility:
    confirmed: list[Coin] = []
    change: list[Coin] = []
    immature: list[Coin] = []
    unconfirmed: list[Coin] = []
    unsupported: list[Coin] = []
    for coin in coins:
        if is_immature_coinbase(coin):
            immature.append(coin)
        elif not is_p2wpkh(coin.script_pubkey):
            # Our size estimates (and the signer) only know P2WPKH inputs.
            unsupported.append(coin)
        elif coin.confirmations >= max(min_confirmations, 1):
            confirmed.append(coin)
        elif coin.confirmations >= min_confirmations:
            # min_confirmations == 0: usable, but still preferred after confirmed coins.
            change.append(coin)
        elif allow_unconfirmed_change and coin.key_path.chain == CHANGE_CHAIN:
            # Only our own change: we wrote the parent, so nobody else can replace it. (A
            # third party paying to one of our change addresses is indistinguishable here;
            # that is why this is opt-in.)
            change.append(coin)
        else:
            unconfirmed.append(coin)
    return Eligibility(
        confirmed=tuple(confirmed),
        unconfirmed_change=tuple(change),
        immature=tuple(immature),
        unconfirmed=tuple(unconfirmed),
        unsupported=tuple(unsupported),
    )


def select_coins(
    coins: Sequence[Coin],
    *,
    target_sat: int,
    fee_rate_sat_per_vb: int,
    output_scripts: Sequence[bytes],
    change_script: bytes,
    min_confirmations: int,
    max_fee_sat: int,
    allow_unconfirmed_change: bool = False,
    bnb_max_tries: int = BNB_MAX_TRIES,
) -> Selection:
    """Choose coins paying ``target_sat`` to ``output_scripts`` plus the fee, with optional change.

    Raises InsufficientFunds (with needed vs available), FeeTooHigh when even the cheapest
    workable transaction would pay more than ``max_fee_sat``, TooLarge when it would exceed the
    standard weight limit.
    """
    check_coins(coins)
    rate = check_fee_rate(fee_rate_sat_per_vb)
    if target_sat <= 0 or target_sat > MAX_MONEY:
        raise InvalidInput("the amount to pay is out of range", field="amount_sat")
    if min_confirmations < 0:
        raise InvalidInput("min_confirmations cannot be negative", field="min_confirmations")
    if not change_script or not all(output_scripts):
        raise InvalidInput("output scripts must not be empty")
    max_inputs = max_inputs_within_weight([*output_scripts, change_script])
    if max_inputs == 0:
        raise TooLarge(
            f"{len(output_scripts)} outputs do not fit in one standard transaction; "
            "split the batch",
        )
    request = _Request(
        target_sat=target_sat,
        fee_rate=rate,
        output_scripts=tuple(output_scripts),
        change_script=change_script,
        max_fee_sat=max_fee_sat,
        max_inputs=max_inputs,
    )
    groups = classify(
        coins,
        min_confirmations=min_confirmations,
        allow_unconfirmed_change=allow_unconfirmed_change,
    )
    tiers = [groups.confirmed]
    if groups.unconfirmed_change:
        tiers.append(groups.confirmed + groups.unconfirmed_change)
    failure: InsufficientFunds | TooLarge | FeeTooHigh | None = None
    for tier in tiers:
        pool = [c for c in selection_order(tier) if effective_value(c, rate) > 0]
        try:
            return _select_from(pool, request, bnb_max_tries)
        except (InsufficientFunds, TooLarge, FeeTooHigh) as exc:
            failure = exc
    if isinstance(failure, InsufficientFunds) or failure is None:
        raise _insufficient(groups, request, min_confirmations) from failure
    raise failure


def _select_from(pool: list[Coin], request: _Request, bnb_max_tries: int) -> Selection:
    changeless = _branch_and_bound(pool, request, bnb_max_tries)
    if changeless is not None:
        return changeless
    return _accumulate(pool, request)


def _changeless_fee_floor(n_inputs: int, request: _Request) -> int:
    return request.fee_rate * estimate_vsize(n_inputs, request.output_scripts)


def _cost_of_change(request: _Request) -> int:
    # Creating the change output now, and spending it as an input later.
    return request.fee_rate * (output_size(request.change_script) + P2WPKH_INPUT_VSIZE)


def _branch_and_bound(pool: list[Coin], request: _Request, max_tries: int) -> Selection | None:
    """Depth-first search for the cheapest changeless selection.

    A hit leaves an excess over the exact fee of at most the cost of change, which goes to the
    miner; among hits, the lowest total fee wins (fewer inputs usually beat a smaller excess).

    Works on effective values; for fewer than 253 inputs vsize is exactly base + 68 per input,
    so the window check is exact, and every hit is re-checked with the exact estimator anyway.
    """
    if not pool:
        return None
    rate = request.fee_rate
    values = [effective_value(c, rate) for c in pool]
    input_vsize = P2WPKH_INPUT_VSIZE
    base_vsize = estimate_vsize(1, request.output_scripts) - input_vsize
    target = request.target_sat + rate * base_vsize
    upper = target + _cost_of_change(request)
    # remaining[i]: what coins i.. could still add; lets us prune hopeless branches.
    remaining = [0] * (len(values) + 1)
    for i in range(len(values) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + values[i]

    # best: (fee, input count, indices): the cheapest transaction now, then the smallest.
    best: tuple[int, int, tuple[int, ...]] | None = None
    chosen: list[int] = []
    value = 0
    index = 0
    for _ in range(max_tries):
        if (
            value > upper
            or value + remaining[index] < target
            or len(chosen) > request.max_inputs
            # Every extension has at least as many inputs, so pays at least this much.
            or (best is not None and rate * (base_vsize + input_vsize * len(chosen)) >= best[0])
        ):
            pass  # dead end: backtrack below
        elif value >= target:
            candidate = _changeless(pool, chosen, request)
            if candidate is not None:
                key = (candidate.fee_sat, len(chosen), tuple(chosen))
                if best is None or key < best:
                    best = key
        elif (
            index > 0
            and values[index] == values[index - 1]
            and (not chosen or chosen[-1] != index - 1)
        ):
            # The previous coin had the same value and was just excluded: including this one
            # instead would only repeat the subtree already explored.
            index += 1
            continue
        else:
            chosen.append(index)
            value += values[index]
            index += 1
            continue
        # Backtrack: drop the last included coin and explore the branch without it.
        if not chosen:
            break
        last = chosen.pop()
        value -= values[last]
        index = last + 1
    if best is None:
        return None
    return _changeless(pool, list(best[2]), request)


def _changeless(pool: list[Coin], chosen: list[int], request: _Request) -> Selection | None:
    coins = [pool[i] for i in chosen]
    total = sum(c.amount_sat for c in coins)
    floor = _changeless_fee_floor(len(coins), request)
    fee = total - request.target_sat
    if fee < floor or fee > request.max_fee_sat or fee - floor > _cost_of_change(request):
        return None
    if len(coins) > request.max_inputs:
        return None
    vsize = estimate_vsize(len(coins), request.output_scripts)
    return Selection(coins=canonical_order(coins), fee_sat=fee, change_sat=0, vsize=vsize)


def _accumulate(pool: list[Coin], request: _Request) -> Selection:
    chosen: list[Coin] = []
    total = 0
    for coin in pool:
        chosen.append(coin)
        total += coin.amount_sat
        if len(chosen) > request.max_inputs:
            raise TooLarge(
                f"paying {request.target_sat} sat needs more than {request.max_inputs} inputs, "
                "over the standard transaction weight limit; consolidate coins or split the batch"
            )
        settled = _settle(chosen, total, request)
        if settled is not None:
            return settled
    if chosen and total >= request.target_sat + _changeless_fee_floor(len(chosen), request):
        raise FeeTooHigh(
            f"the remainder of {total - request.target_sat} sat is too small for change and "
            f"too large to leave to the fee under the cap of {request.max_fee_sat} sat",
            field="max_fee_sat",
        )
    raise InsufficientFunds("not enough spendable coins")  # replaced by the caller's message


def _settle(chosen: list[Coin], total: int, request: _Request) -> Selection | None:
    """The transaction these coins make, or None if one more coin is needed."""
    n = len(chosen)
    floor = _changeless_fee_floor(n, request)
    if floor > request.max_fee_sat:
        # More inputs only make the transaction larger.
        raise FeeTooHigh(
            f"the fee would be at least {floor} sat at {request.fee_rate} sat/vB, "
            f"above the cap of {request.max_fee_sat} sat",
            field="max_fee_sat",
        )
    if total < request.target_sat + floor:
        return None
    scripts_with_change = [*request.output_scripts, request.change_script]
    vsize_with_change = estimate_vsize(n, scripts_with_change)
    fee_with_change = request.fee_rate * vsize_with_change
    change = total - request.target_sat - fee_with_change
    if change >= DUST_LIMIT_SAT and fee_with_change <= request.max_fee_sat:
        return Selection(canonical_order(chosen), fee_with_change, change, vsize_with_change)
    if change >= DUST_LIMIT_SAT:
        raise FeeTooHigh(
            f"the fee would be {fee_with_change} sat at {request.fee_rate} sat/vB, "
            f"above the cap of {request.max_fee_sat} sat",
            field="max_fee_sat",
        )
    # Change would be dust: nodes will not relay it, so the remainder goes to the miner,
    # unless that breaks the fee cap, in which case one more coin makes real change.
    fee = total - request.target_sat
    if fee <= request.max_fee_sat:
        vsize = estimate_vsize(n, request.output_scripts)
        return Selection(canonical_order(chosen), fee, 0, vsize)
    return None


def _insufficient(
    groups: Eligibility, request: _Request, min_confirmations: int
) -> InsufficientFunds:
    usable = [
        c
        for c in groups.confirmed + groups.unconfirmed_change
        if effective_value(c, request.fee_rate) > 0
    ]
    uneconomic = sum(
        c.amount_sat
        for c in groups.confirmed + groups.unconfirmed_change
        if effective_value(c, request.fee_rate) <= 0
    )
    available = sum(c.amount_sat for c in usable)
    fee = request.fee_rate * estimate_vsize(max(len(usable), 1), request.output_scripts)
    needed = request.target_sat + fee
    immature = sum(c.amount_sat for c in groups.immature)
    unconfirmed = sum(c.amount_sat for c in groups.unconfirmed)
    unsupported = sum(c.amount_sat for c in groups.unsupported)
    return InsufficientFunds(
        f"insufficient funds: need {needed} sat ({request.target_sat} to pay + {fee} fee at "
        f"{request.fee_rate} sat/vB) but only {available} sat is spendable; not counted: "
        f"{immature} sat immature coinbase, {unconfirmed} sat with fewer than "
        f"{min_confirmations} confirmations, {uneconomic} sat in coins worth less than their "
        f"fee, {unsupported} sat in non-P2WPKH coins"
    )
