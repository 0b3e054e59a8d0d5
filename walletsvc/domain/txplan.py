"""Transaction plans: batched payouts, sweeps to cold storage and BIP125 fee bumps.

Every plan is conserved to the satoshi (inputs = outputs + fee), pays at least its fee rate on
a worst-case vsize, stays under the caller's fee cap, has no dust output and orders inputs and
outputs deterministically (BIP69-like), so the same request always yields the same plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .coinselect import (
    canonical_order,
    check_coins,
    check_fee_rate,
    classify,
    effective_value,
    select_coins,
    selection_order,
)
from .errors import FeeTooHigh, InsufficientFunds, InvalidAmount, InvalidInput, TooLarge
from .money import DUST_LIMIT_SAT, MAX_MONEY, require_payable, require_satoshis
from .sizes import (
    MAX_STANDARD_TX_WEIGHT,
    MIN_LIKELY_SIGNATURE_SIZE,
    estimate_vsize,
    estimate_weight,
    max_inputs_within_weight,
)
from .transaction import (
    CHANGE_CHAIN,
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)

MAX_LOCKTIME = 0xFFFF_FFFF
# Bitcoin Core's -incrementalrelayfee default: a replacement must pay for its own relay at
# this rate on top of everything the original paid (BIP125 rule 4).
INCREMENTAL_RELAY_FEE_SAT_PER_VB = 1

_PURPOSE_RANK = {OutputPurpose.PAYOUT: 0, OutputPurpose.SWEEP: 1, OutputPurpose.CHANGE: 2}


def plan_payouts(
    coins: Sequence[Coin],
    payouts: Sequence[ApprovedPayout],
    *,
    change_script: bytes,
    change_path: KeyPath,
    fee_rate_sat_per_vb: int,
    max_fee_sat: int,
    min_confirmations: int,
    locktime: int = 0,
    allow_unconfirmed_change: bool = False,
) -> TransactionPlan:
    """One transaction paying every payout exactly once, plus change unless it would be dust."""
    rate = check_fee_rate(fee_rate_sat_per_vb)
    cap = require_satoshis(max_fee_sat, field="max_fee_sat")
    _check_locktime(locktime)
    _check_change(change_script, change_path)
    target = _check_payouts(payouts, change_script)
    selection = select_coins(
        coins,
        target_sat=target,
        fee_rate_sat_per_vb=rate,
        output_scripts=[p.script_pubkey for p in payouts],
        change_script=change_script,
        min_confirmations=min_confirmations,
        max_fee_sat=cap,
        allow_unconfirmed_change=allow_unconfirmed_change,
    )
    outputs = [
        PlannedOutput(p.script_pubkey, p.amount_sat, OutputPurpose.PAYOUT, p.withdrawal_id)
        for p in payouts
    ]
    if selection.has_change:
        outputs.append(
            PlannedOutput(
                change_script, selection.change_sat, OutputPurpose.CHANGE, key_path=change_path
            )
        )
    return _finish(
        selection.coins, outputs, selection.fee_sat, rate=rate, cap=cap, locktime=locktime
    )


def largest_fitting_batch(
    plan_for: Callable[[Sequence[ApprovedPayout]], TransactionPlan],
    payouts: Sequence[ApprovedPayout],
) -> TransactionPlan:
    """The plan paying the longest leading part of ``payouts`` that makes one transaction.

    ``plan_for`` plans a batch (``plan_payouts`` with the caller's coins, change and caps).
    When all of ``payouts`` exceed the standard weight (TooLarge) or the fee cap
    (FeeTooHigh), a bisection finds the largest prefix that does not: fewer outputs never
    weigh or cost more, so the prefixes that fit are exactly the short ones. Other failures
    (not enough funds, bad input) are the whole batch's and are raised as they are, as is
    the failure of a single payout.
    """
    if not payouts:
        raise InvalidInput("there is nothing to pay", field="payouts")
    try:
        return plan_for(payouts)
    except (TooLarge, FeeTooHigh) as too_big:
        failure: TooLarge | FeeTooHigh = too_big
    best: TransactionPlan | None = None
    low, high = 1, len(payouts) - 1  # invariant: every count above ``high`` fails
    while low <= high:
        middle = (low + high) // 2
        try:
            best = plan_for(payouts[:middle])
        except (TooLarge, FeeTooHigh) as exc:
            failure = exc
            high = middle - 1
        else:
            low = middle + 1
    if best is None:
        raise failure
    return best


def plan_sweep(
    coins: Sequence[Coin],
    *,
    destination_script: bytes,
    keep_sat: int | None,
    fee_rate_sat_per_vb: int,
    max_fee_sat: int,
    change_script: bytes,
    change_path: KeyPath,
    min_confirmations: int,
    locktime: int = 0,
) -> TransactionPlan:
    """Move every eligible coin to ``destination_script`` (cold storage), minus the fee.

    With ``keep_sat`` (at least the dust limit) that much stays behind as one change output.
    Immature, unconfirmed and uneconomic coins (worth less than the fee to spend them) stay
    where they are. If the eligible coins would exceed the standard weight limit, the largest
    that fit are swept and the rest are left for another sweep.
    """
    rate = check_fee_rate(fee_rate_sat_per_vb)
    cap = require_satoshis(max_fee_sat, field="max_fee_sat")
    _check_locktime(locktime)
    if not destination_script:
        raise InvalidInput("the sweep destination script is empty", field="destination")
    check_coins(coins)
    keep = 0 if keep_sat is None or keep_sat == 0 else require_payable(keep_sat, field="keep_sat")
    if keep:
        _check_change(change_script, change_path)
        if destination_script == change_script:
            raise InvalidInput(
                "the sweep destination is our own change script", field="destination"
            )
    scripts = [destination_script, change_script] if keep else [destination_script]

    groups = classify(coins, min_confirmations=min_confirmations)
    pool = [c for c in selection_order(groups.confirmed) if effective_value(c, rate) > 0]
    max_inputs = max_inputs_within_weight(scripts)
    chosen = pool[:max_inputs]
    if not chosen:
        raise InsufficientFunds(
            f"nothing to sweep: no coin with {min_confirmations}+ confirmations is worth more "
            f"than the fee to spend it at {rate} sat/vB"
        )
    total = sum(c.amount_sat for c in chosen)
    fee = rate * estimate_vsize(len(chosen), scripts)
    if fee > cap:
        raise FeeTooHigh(
            f"sweeping {len(chosen)} coins costs {fee} sat at {rate} sat/vB, above the cap of "
            f"{cap} sat",
            field="max_fee_sat",
        )
    swept = total - keep - fee
    if swept < DUST_LIMIT_SAT:
        raise InsufficientFunds(
            f"insufficient funds to sweep: {total} sat spendable, {keep} sat to keep and {fee} "
            f"sat fee leave {swept} sat, below the dust limit of {DUST_LIMIT_SAT} sat"
        )
    outputs = [PlannedOutput(destination_script, swept, OutputPurpose.SWEEP)]
    if keep:
        outputs.append(
            PlannedOutput(change_script, keep, OutputPurpose.CHANGE, key_path=change_path)
        )
    return _finish(chosen, outputs, fee, rate=rate, cap=cap, locktime=locktime)


def plan_replacement(
    original: TransactionPlan,
    *,
    new_fee_rate_sat_per_vb: int,
    max_fee_sat: int,
    extra_coins: Sequence[Coin] = (),
    min_confirmations: int = 1,
    change_script: bytes | None = None,
    change_path: KeyPath | None = None,
    original_vsize: int | None = None,
) -> TransactionPlan:
    """A BIP125 replacement of ``original`` paying a higher fee, with every payout unchanged.

    Keeps all original inputs (so the two can never both confirm) and every non-change output
    exactly; the extra fee comes out of the change, and if that is not enough, from
    ``extra_coins`` (confirmed only, largest first). ``change_script``/``change_path`` are used
    only when the original has no change output but the replacement needs one.
    ``original_vsize`` is the signed original's real vsize, if known.
    """
    rate = check_fee_rate(new_fee_rate_sat_per_vb)
    cap = require_satoshis(max_fee_sat, field="max_fee_sat")
    if rate <= original.fee_rate_sat_per_vb:
        raise InvalidInput(
            f"a fee bump needs a rate above the original {original.fee_rate_sat_per_vb} sat/vB",
            field="new_fee_rate_sat_per_vb",
        )
    fixed, change = _split_original(original)
    if change is None and change_script is not None:
        if change_path is None:
            raise InvalidInput("change_path is required with change_script", field="change_path")
        _check_change(change_script, change_path)
        change = PlannedOutput(change_script, 0, OutputPurpose.CHANGE, key_path=change_path)
    extra = _extra_coins(original, extra_coins, min_confirmations, rate)
    old_vsize = original_vsize or estimate_vsize(
        len(original.inputs),
        [o.script_pubkey for o in original.outputs],
        signature_size=MIN_LIKELY_SIGNATURE_SIZE,
    )
    for n_extra in range(len(extra) + 1):
        inputs = original.inputs + tuple(extra[:n_extra])
        plan = _settle_replacement(
            original, inputs, fixed, change, rate=rate, cap=cap, old_vsize=old_vsize
        )
        if plan is not None:
            return plan
    needed = sum(o.amount_sat for o in fixed) + _replacement_fee(
        original,
        len(original.inputs) + len(extra),
        [o.script_pubkey for o in fixed],
        rate,
        old_vsize,
    )
    available = original.input_total + sum(c.amount_sat for c in extra)
    raise InsufficientFunds(
        f"insufficient funds to bump the fee: need {needed} sat, only {available} sat in the "
        f"original inputs and {len(extra)} usable extra coins"
    )


def _settle_replacement(
    original: TransactionPlan,
    inputs: tuple[Coin, ...],
    fixed: list[PlannedOutput],
    change: PlannedOutput | None,
    *,
    rate: int,
    cap: int,
    old_vsize: int,
) -> TransactionPlan | None:
    """The replacement spending ``inputs``, or None if it needs one more coin."""
    fixed_scripts = [o.script_pubkey for o in fixed]
    fixed_total = sum(o.amount_sat for o in fixed)
    total = sum(c.amount_sat for c in inputs)
    if estimate_weight(len(inputs), fixed_scripts) > MAX_STANDARD_TX_WEIGHT:
        raise TooLarge("the replacement would exceed the standard transaction weight limit")
    floor = _replacement_fee(original, len(inputs), fixed_scripts, rate, old_vsize)
    if floor > cap:
        raise FeeTooHigh(
            f"the replacement must pay at least {floor} sat, above the cap of {cap} sat",
            field="max_fee_sat",
        )
    if total < fixed_total + floor:
        return None
    if change is not None:
        scripts = [*fixed_scripts, change.script_pubkey]
        fee = _replacement_fee(original, len(inputs), scripts, rate, old_vsize)
        change_sat = total - fixed_total - fee
        fits = estimate_weight(len(inputs), scripts) <= MAX_STANDARD_TX_WEIGHT
        if change_sat >= DUST_LIMIT_SAT and fee <= cap and fits:
            outputs = [*fixed, _with_amount(change, change_sat)]
            return _finish(inputs, outputs, fee, rate=rate, cap=cap, locktime=original.locktime)
        if change_sat >= DUST_LIMIT_SAT and fee > cap:
            raise FeeTooHigh(
                f"the replacement must pay {fee} sat, above the cap of {cap} sat",
                field="max_fee_sat",
            )
    # No change, or change that would be dust: the whole remainder becomes the fee.
    fee = total - fixed_total
    if fee <= cap:
        return _finish(inputs, fixed, fee, rate=rate, cap=cap, locktime=original.locktime)
    if change is None:
        raise FeeTooHigh(
            f"without a change output the replacement would pay {fee} sat, above the cap of "
            f"{cap} sat; pass a change script",
            field="max_fee_sat",
        )
    return None


def _replacement_fee(
    original: TransactionPlan, n_inputs: int, scripts: Sequence[bytes], rate: int, old_vsize: int
) -> int:
    """The least fee a replacement of this shape may pay under BIP125 and Core's policy."""
    vsize = estimate_vsize(n_inputs, scripts)
    at_rate = rate * vsize
    # Rules 3 and 4: at least the original's absolute fee plus relay of the new one.
    relay = original.fee_sat + INCREMENTAL_RELAY_FEE_SAT_PER_VB * vsize
    # Core also wants a strictly higher fee rate than the transaction it evicts; a bigger
    # replacement (an added input) can otherwise satisfy rule 4 at a lower rate.
    higher_rate = original.fee_sat * vsize // old_vsize + 1
    return max(at_rate, relay, higher_rate)


def _split_original(original: TransactionPlan) -> tuple[list[PlannedOutput], PlannedOutput | None]:
    if not original.inputs:
        raise InvalidInput("the original transaction has no inputs", field="original")
    if original.input_total != original.output_total + original.fee_sat:
        raise InvalidInput("the original plan does not balance", field="original")
    changes = [o for o in original.outputs if o.purpose is OutputPurpose.CHANGE]
    if len(changes) > 1:
        raise InvalidInput("the original plan has more than one change output", field="original")
    fixed = [o for o in original.outputs if o.purpose is not OutputPurpose.CHANGE]
    if not fixed:
        raise InvalidInput("the original plan pays nobody", field="original")
    return fixed, (changes[0] if changes else None)


def _extra_coins(
    original: TransactionPlan, extra_coins: Sequence[Coin], min_confirmations: int, rate: int
) -> list[Coin]:
    check_coins(extra_coins)
    spent = {(c.txid.lower(), c.vout) for c in original.inputs}
    fresh = [c for c in extra_coins if (c.txid.lower(), c.vout) not in spent]
    # BIP125 rule 2: a replacement may add no unconfirmed input, so at least 1 confirmation.
    groups = classify(fresh, min_confirmations=max(min_confirmations, 1))
    return [c for c in selection_order(groups.confirmed) if effective_value(c, rate) > 0]


def _with_amount(output: PlannedOutput, amount_sat: int) -> PlannedOutput:
    return PlannedOutput(
        output.script_pubkey, amount_sat, output.purpose, output.withdrawal_id, output.key_path
    )


def _check_payouts(payouts: Sequence[ApprovedPayout], change_script: bytes) -> int:
    if not payouts:
        raise InvalidInput("there is nothing to pay", field="payouts")
    seen: set[str] = set()
    total = 0
    for i, payout in enumerate(payouts):
        if not payout.withdrawal_id:
            raise InvalidInput(f"payouts[{i}] has no withdrawal id", field=f"payouts[{i}]")
        if payout.withdrawal_id in seen:
            raise InvalidInput(
                f"withdrawal {payout.withdrawal_id} appears twice in one batch",
                field=f"payouts[{i}].withdrawal_id",
            )
        seen.add(payout.withdrawal_id)
        if not payout.script_pubkey:
            raise InvalidInput(f"payouts[{i}] has an empty script", field=f"payouts[{i}]")
        if payout.script_pubkey == change_script:
            # Our change and a payout would be indistinguishable to anyone reading the chain.
            raise InvalidInput(
                f"payouts[{i}] pays our own change address", field=f"payouts[{i}].script_pubkey"
            )
        total += require_payable(payout.amount_sat, field=f"payouts[{i}].amount_sat")
    if total > MAX_MONEY:
        raise InvalidAmount("the batch exceeds the 21 million BTC supply", field="payouts")
    return total


def _check_change(change_script: bytes, change_path: KeyPath) -> None:
    if not change_script:
        raise InvalidInput("the change script is empty", field="change_script")
    if change_path.chain != CHANGE_CHAIN:
        raise InvalidInput("change must go to the BIP84 change chain", field="change_path")


def _check_locktime(locktime: int) -> None:
    if isinstance(locktime, bool) or not isinstance(locktime, int):
        raise InvalidInput("locktime must be an integer", field="locktime")
    if not 0 <= locktime <= MAX_LOCKTIME:
        raise InvalidInput("locktime is out of range", field="locktime")


def ordered_outputs(outputs: Iterable[PlannedOutput]) -> tuple[PlannedOutput, ...]:
    """BIP69 output order (amount, then script), then purpose and withdrawal id for full ties."""
    return tuple(
        sorted(
            outputs,
            key=lambda o: (
                o.amount_sat,
                o.script_pubkey,
                _PURPOSE_RANK[o.purpose],
                o.withdrawal_id or "",
            ),
        )
    )


def _finish(
    inputs: Sequence[Coin],
    outputs: Sequence[PlannedOutput],
    fee_sat: int,
    *,
    rate: int,
    cap: int,
    locktime: int,
) -> TransactionPlan:
    plan = TransactionPlan(
        inputs=canonical_order(inputs),
        outputs=ordered_outputs(outputs),
        fee_sat=fee_sat,
        locktime=locktime,
        fee_rate_sat_per_vb=rate,
    )
    _check_invariants(plan, cap)
    return plan


def _check_invariants(plan: TransactionPlan, cap: int) -> None:
    """Last line of defence before a plan leaves the domain; a failure here is a bug."""
    scripts = [o.script_pubkey for o in plan.outputs]
    vsize = estimate_vsize(len(plan.inputs), scripts)
    problems = []
    if plan.input_total != plan.output_total + plan.fee_sat:
        problems.append("inputs do not equal outputs plus fee")
    if plan.fee_sat < plan.fee_rate_sat_per_vb * vsize:
        problems.append("fee below the target rate")
    if plan.fee_sat > cap:
        problems.append("fee above the cap")
    if any(o.amount_sat < DUST_LIMIT_SAT for o in plan.outputs):
        problems.append("dust output")
    if estimate_weight(len(plan.inputs), scripts) > MAX_STANDARD_TX_WEIGHT:
        problems.append("over the standard weight limit")
    if problems:
        raise AssertionError("transaction plan invariant broken: " + ", ".join(problems))


def outbid_rate(
    *,
    conflict_fee_sat: int,
    conflict_vsize: int,
    evicted_fees_sat: int,
    own_vsize: int,
    floor_rate: int = 1,
) -> int:
    """The lowest whole sat/vB at which a transaction of ``own_vsize`` (our upper estimate)
    replaces a conflicting mempool transaction under Bitcoin Core's full-RBF rules.

    Rule 6: a feerate strictly above the conflict's; Core compares sat/kvB truncated, and a
    whole sat/vB above the conflict's rounded down is above it in any unit. Rules 3 and 4:
    at least the fees of everything evicted (the conflict and its descendants) plus the
    incremental relay fee on our own size. The fee is ``rate * own_vsize`` and our signed
    size is at most the estimate, so both hold for the signed transaction too.
    """
    if conflict_vsize <= 0 or own_vsize <= 0:
        raise InvalidInput("sizes must be positive", field="vsize")
    higher_rate = conflict_fee_sat // conflict_vsize + 1
    pays_for_evicted = -(-evicted_fees_sat // own_vsize) + INCREMENTAL_RELAY_FEE_SAT_PER_VB
    return max(floor_rate, higher_rate, pays_for_evicted)
