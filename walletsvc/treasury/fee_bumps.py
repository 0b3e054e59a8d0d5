"""Fee rates and BIP125 fee bumps of our stuck transactions.

A payout batch not confirmed ``rbf_after_blocks`` blocks after it was signed is replaced by one
paying the same payouts at a higher fee rate (``plan_replacement``: every original input kept,
so the two conflict and at most one can ever confirm; every payout output unchanged; the extra
fee out of the change). The replacement goes through the same path as any signed transaction:
stored (``replaces_id`` set, the original marked ``replaced``, the payouts moved to it) in one
DB transaction, broadcast only after that commit.

If the original confirms after all (it was broadcast, a miner may have it), the scanner marks
it confirmed and every replacement of it ``dead``; see Scanner._resolve_conflicts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from bitcoin.core import CTransaction, b2lx
from prometheus_client import Counter as MetricCounter

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import ChainTransaction, Wallet, Withdrawal, utcnow
from walletsvc.db.models_treasury import TransactionWatch
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import withdrawal_authorization_message
from walletsvc.domain.errors import DomainError, SigningRefused
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.domain.txplan import INCREMENTAL_RELAY_FEE_SAT_PER_VB, plan_replacement
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.keys.integrity import RowTagger
from walletsvc.payouts.signing import (
    Reservation,
    SigningPipeline,
    reserve_inputs,
    spendable_coins,
    tip_height,
    to_coins,
)
from walletsvc.payouts.worker import approved_payout, split_fee
from walletsvc.wallets.freezes import withdrawals_freeze
from walletsvc.wallets.service import next_change_path

log = logging.getLogger(__name__)
ACTOR = "system:fee-bumper"
IN_FLIGHT = ("signed", "broadcast")
# Each bump raises the rate by at least a quarter, so a stuck batch catches up with the market
# in a few steps instead of creeping up by the 1 sat/vB relay minimum.
BUMP_FACTOR_NUM, BUMP_FACTOR_DEN = 5, 4

FEE_BUMPS = MetricCounter("walletsvc_fee_bumps_total", "BIP125 fee bumps signed", ["wallet"])


def bumped_rate(old_rate: int, market_rate: int, ceiling: int) -> int | None:
    """The rate of a replacement, or None if the ceiling leaves no room to bump."""
    wanted = max(
        market_rate,
        -(-old_rate * BUMP_FACTOR_NUM // BUMP_FACTOR_DEN),
        old_rate + INCREMENTAL_RELAY_FEE_SAT_PER_VB,
    )
    rate = min(wanted, ceiling)
    return rate if rate > old_rate else None


def watch(uow: UnitOfWork, tx: ChainTransaction) -> None:
    """Remember the height at which we signed ``tx`` (the clock of the RBF rule)."""
    uow.watches.add(TransactionWatch(transaction_id=tx.id, signed_height=tip_height(uow)))


@dataclass(frozen=True)
class Bump:
    old_txid: str
    new_txid: str
    old_fee_sat: int
    new_fee_sat: int
    new_rate: int


class FeeBumper:
    def __init__(self, db: Database, tags: RowTagger, pipeline: SigningPipeline) -> None:
        self.db = db
        self.tags = tags
        self.pipeline = pipeline
        self.settings: Settings = pipeline.settings

    def stuck(self) -> list[str]:
        """Ids of broadcast payout batches unconfirmed for ``rbf_after_blocks`` blocks."""
        if self.settings.rbf_after_blocks <= 0:
            return []
        with self.db.read() as uow:
            tip = tip_height(uow)
            rows = uow.transactions.broadcast_payouts_with_signed_height()
        return [
            tx.id
            for tx, height in rows
            if tip - _signed_height(tx, height) >= self.settings.rbf_after_blocks
        ]

    def bump_stuck(self) -> list[Bump]:
        bumps = []
        for tx_id in self.stuck():
            try:
                bump = self.bump(tx_id)
            except DomainError as exc:
                log.warning("cannot bump the fee of transaction %s: %s", tx_id, exc.message)
                with self.db.read() as uow:
                    tx = uow.transactions.get(tx_id)
                    wallet_id = tx.wallet_id if tx is not None else None
                if wallet_id is not None:
                    self.pipeline.report_failure(wallet_id, exc)
                continue
            if bump is not None:
                bumps.append(bump)
        return bumps

    def bump(self, tx_id: str, *, rate: int | None = None) -> Bump | None:
        """Sign and store a replacement of ``tx_id``; the caller broadcasts it."""
        with self.db.write() as uow:
            old = uow.transactions.get(tx_id)
            if old is None or old.status != "broadcast" or old.kind != "payout":
                return None
            wallet = uow.wallets.get(old.wallet_id)
            assert wallet is not None
            if withdrawals_freeze(uow, wallet.id) is not None:
                return None
            new_rate = rate or bumped_rate(
                old.fee_rate_sat_per_vb,
                self.pipeline.fee_rate(),
                self.settings.fee_ceiling_sat_per_vb,
            )
            if new_rate is None:
                log.warning("transaction %s is at the fee ceiling; not bumping", old.txid)
                return None
            payouts = _payouts_of(uow, old)
            original = _reconstruct(uow, wallet, old, payouts)
            change_path, change_script = _change_for_bump(uow, wallet, original)
            plan = plan_replacement(
                original,
                new_fee_rate_sat_per_vb=new_rate,
                max_fee_sat=self.settings.max_fee_sat,
                extra_coins=spendable_coins(uow, wallet),
                min_confirmations=self.settings.min_confirmations,
                change_script=change_script,
                change_path=change_path,
                original_vsize=old.vsize,
            )
            approved = [_approved(self.tags, w) for w in payouts]
            new = self.pipeline.sign_and_store(
                uow,
                wallet=wallet,
                plan=plan,
                kind=old.kind,
                rate=new_rate,
                approved=approved,
                replaces_id=old.id,
                reserve=_taking_over_from(old),
            )
            old.status = "replaced"
            for w, share in zip(payouts, split_fee(new.fee_sat, len(payouts)), strict=True):
                w.transaction_id = new.id
                w.fee_share_sat = share
                w.updated_at = utcnow()
            watch(uow, new)
            FEE_BUMPS.labels(wallet=wallet.name).inc()
            uow.audit(
                ACTOR,
                "transaction.replaced",
                "chain_transaction",
                new.id,
                {
                    "txid": new.txid,
                    "replaces_txid": old.txid,
                    "old_fee_sat": old.fee_sat,
                    "new_fee_sat": new.fee_sat,
                    "old_rate": old.fee_rate_sat_per_vb,
                    "new_rate": new_rate,
                    "withdrawals": [w.id for w in payouts],
                    "inputs": [f"{c.txid}:{c.vout}" for c in plan.inputs],
                },
            )
            log.warning(
                "fee bump: %s (%d sat) replaced by %s (%d sat)",
                old.txid,
                old.fee_sat,
                new.txid,
                new.fee_sat,
            )
            return Bump(old.txid, new.txid, old.fee_sat, new.fee_sat, new_rate)


def _signed_height(tx: ChainTransaction, watched: int | None) -> int:
    """The tip when ``tx`` was signed: recorded, or its anti-fee-sniping nLockTime (the worker
    sets it to the tip it signed at)."""
    if watched is not None:
        return watched
    return int(CTransaction.deserialize(bytes.fromhex(tx.raw_tx)).nLockTime)


def _payouts_of(uow: ReadUnitOfWork, tx: ChainTransaction) -> list[Withdrawal]:
    return uow.withdrawals.in_transaction(
        tx.id, [WithdrawalStatus.SIGNED.value, WithdrawalStatus.BROADCAST.value]
    )


def _approved(tags: RowTagger, w: Withdrawal) -> ApprovedPayout:
    # The approval tag is re-checked: a replacement must not pay a row edited since signing.
    if not w.authorization_mac or not tags.verify(
        withdrawal_authorization_message(w), w.authorization_mac
    ):
        raise SigningRefused(f"withdrawal {w.id} fails its integrity check; not re-signing it")
    return approved_payout(w)  # with its approval content, should the signer count it again


def _reconstruct(
    uow: ReadUnitOfWork, wallet: Wallet, tx: ChainTransaction, payouts: list[Withdrawal]
) -> TransactionPlan:
    """The plan ``tx`` was signed from, rebuilt from its bytes and our records."""
    decoded = CTransaction.deserialize(bytes.fromhex(tx.raw_tx))
    coins = {(c.txid, c.vout): c for c in _reserved_coins(uow, tx)}
    inputs = []
    for txin in decoded.vin:
        key = (b2lx(txin.prevout.hash), txin.prevout.n)
        if key not in coins:
            raise SigningRefused(f"transaction {tx.txid} spends {key[0]}:{key[1]}, not ours")
        inputs.append(coins[key])
    queues: dict[tuple[str, int], list[Withdrawal]] = defaultdict(list)
    for w in payouts:
        queues[(w.script_pubkey, w.amount_sat)].append(w)
    outputs = []
    for out in decoded.vout:
        script, amount = bytes(out.scriptPubKey), int(out.nValue)
        queue = queues.get((script.hex(), amount))
        if queue:
            owner = queue.pop(0)
            outputs.append(PlannedOutput(script, amount, OutputPurpose.PAYOUT, owner.id))
            continue
        ours = uow.addresses.of_wallet_by_script(wallet.id, script.hex())
        if ours is None or ours.chain != 1:
            raise SigningRefused(
                f"output of {tx.txid} to {script.hex()} is neither payout nor change"
            )
        path = KeyPath(ours.epoch, ours.chain, ours.index)
        outputs.append(PlannedOutput(script, amount, OutputPurpose.CHANGE, key_path=path))
    fee = sum(c.amount_sat for c in inputs) - sum(o.amount_sat for o in outputs)
    return TransactionPlan(
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        fee_sat=fee,
        locktime=int(decoded.nLockTime),
        fee_rate_sat_per_vb=tx.fee_rate_sat_per_vb,
    )


def _reserved_coins(uow: ReadUnitOfWork, tx: ChainTransaction) -> list[Coin]:
    return to_coins(uow, uow.utxos.reserved_with_addresses(tx.id))


def _change_for_bump(
    uow: UnitOfWork, wallet: Wallet, original: TransactionPlan
) -> tuple[KeyPath | None, bytes | None]:
    """A change address only if the original had none (plan_replacement reuses the old one)."""
    if any(o.purpose is OutputPurpose.CHANGE for o in original.outputs):
        return None, None
    path, script = next_change_path(uow, wallet)
    return path, script


def _taking_over_from(old: ChainTransaction) -> Reservation:
    def reserve(uow: UnitOfWork, plan: TransactionPlan, tx_id: str) -> None:
        # The original's coins move to the replacement; added coins are reserved fresh.
        for utxo in uow.utxos.reserved_by(old.id):
            utxo.reserved_by = tx_id
        reserve_inputs(uow, _only_unreserved(uow, plan), tx_id)

    return reserve


def _only_unreserved(uow: ReadUnitOfWork, plan: TransactionPlan) -> TransactionPlan:
    """The plan restricted to inputs no transaction reserves yet (the coins a bump added)."""
    fresh = []
    for coin in plan.inputs:
        utxo = uow.utxos.by_outpoint(coin.txid, coin.vout)
        if utxo is not None and utxo.reserved_by is None:
            fresh.append(coin)
    return TransactionPlan(tuple(fresh), plan.outputs, plan.fee_sat)


def revive_original(uow: UnitOfWork, original: ChainTransaction) -> None:
    """``original`` (status ``replaced``) is in a block: its replacements are ``dead``.

    Both spend the same inputs, so once the original is mined no replacement can ever be. The
    payouts move back to the original (same outputs: a replacement never drops one), with
    their shares of the fee the original actually paid; coins only a dead replacement had
    reserved are released. Called by the scanner inside the block's write transaction, before
    it confirms the original's payouts.
    """
    dead = _replacements_of(uow, original)
    moved: list[Withdrawal] = []
    for tx in dead:
        tx.status = "dead"
        moved.extend(uow.withdrawals.of_transaction(tx.id))
        for utxo in uow.utxos.reserved_by(tx.id):
            # Inputs shared with the original are spent by it now: they stay reserved.
            utxo.reserved_by = None if utxo.spent_by_txid is None else original.id
    moved.sort(key=lambda w: (w.created_at, w.id))
    for w, share in zip(moved, split_fee(original.fee_sat, len(moved) or 1), strict=False):
        w.transaction_id = original.id
        w.fee_share_sat = share
        w.updated_at = utcnow()
    uow.audit(
        ACTOR,
        "transaction.replacement_dead",
        "chain_transaction",
        original.id,
        {
            "txid": original.txid,
            "dead_txids": [tx.txid for tx in dead],
            "withdrawals": [w.id for w in moved],
        },
    )
    log.warning(
        "replaced transaction %s confirmed; replacement(s) %s are dead",
        original.txid,
        [tx.txid for tx in dead],
    )


def _replacements_of(uow: ReadUnitOfWork, original: ChainTransaction) -> list[ChainTransaction]:
    """Every transaction that (transitively) replaces ``original``."""
    found: list[ChainTransaction] = []
    frontier = [original.id]
    while frontier:
        children = uow.transactions.replacing(frontier)
        found.extend(children)
        frontier = [c.id for c in children]
    return found
