"""Follows the chain tip and keeps our view of coins, confirmations and spends true.

Cold storage is watched too (watch-only, from the cold destinations' public descriptors):
outputs paying a cold address become ``cold_utxos`` (the cold balance, and what a refill can
spend), and a refill's transaction confirming marks the refill confirmed.

Reorganisations: each scanned block's hash is stored; on every pass we walk back from our
highest scanned block until our hash matches the backend's at that height (the fork point),
undo everything above it in one transaction, then scan forward again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bitcoin.core import CBlock, b2lx

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import (
    Address,
    ScannedBlock,
    Utxo,
    utcnow,
)
from walletsvc.db.models_treasury import ColdUtxo
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.ports import ChainBackend
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.treasury.cold import WatchedColdAddress, watched_cold_scripts
from walletsvc.wallets.service import LOOKAHEAD, ensure_derived

log = logging.getLogger(__name__)
ACTOR = "system:scanner"


@dataclass(frozen=True)
class ScanReport:
    tip_height: int
    blocks_scanned: int
    rolled_back_to: int | None


# Called inside each scanned block's write transaction with (uow, height, our coins spent by
# transactions that are not ours as (spending txid, coin), the txids of our own transactions
# in the block): the risk monitor's chain watcher (walletsvc.incident.risk).
BlockWatcher = Callable[[UnitOfWork, int, list[tuple[str, Utxo]], list[str]], None]
# Called inside a reorganisation's write transaction with the fork height, after our records
# above it were undone: what a watcher concluded from those blocks must be undone too (the
# theft shield's saved/lost outcomes).
RollbackWatcher = Callable[[UnitOfWork, int], None]


class Scanner:
    def __init__(self, db: Database, chain: ChainBackend, *, start_height: int = 0) -> None:
        self.db = db
        self.chain = chain
        self.start_height = start_height
        self.block_watchers: list[BlockWatcher] = []
        self.rollback_watchers: list[RollbackWatcher] = []

    def sync(self, *, max_blocks: int = 2_000) -> ScanReport:
        tip = self.chain.tip()
        fork = self._find_fork()
        rolled_back_to = None
        if fork is not None:
            self._roll_back(fork)
            rolled_back_to = fork
        with self.db.read() as uow:
            last = uow.scanned_blocks.highest()
        height = self.start_height if last is None else last + 1
        scanned = 0
        with self.db.read() as uow:
            watched = _watched_scripts(uow)
            cold = watched_cold_scripts(uow)
        while height <= tip.height and scanned < max_blocks:
            block_hash = self.chain.block_hash(height)
            if block_hash is None:
                break
            raw = self.chain.block_bytes(block_hash)
            if not self._scan_block(height, block_hash, raw, watched, cold):
                break  # the tip moved under us (a reorg mid-scan): the next pass handles it
            height += 1
            scanned += 1
        return ScanReport(tip.height, scanned, rolled_back_to)

    def _find_fork(self) -> int | None:
        """The highest height where our record agrees with the chain, if anything disagrees."""
        below: int | None = None
        first = True
        while True:
            with self.db.read() as uow:
                page = uow.scanned_blocks.newest_below(below, limit=100)
            if not page:
                return None if first else self.start_height - 1
            for height, block_hash in page:
                if self.chain.block_hash(height) == block_hash:
                    return None if first else height
                first = False
            below = page[-1][0]

    def _roll_back(self, fork_height: int) -> None:
        with self.db.write() as uow:
            # A coinbase exists only in its own block: one on the abandoned branch can never
            # confirm again, so its outputs go (an identical coinbase on the new branch is
            # recorded afresh by the rescan).
            dropped = [f"{u.txid}:{u.vout}" for u in uow.utxos.coinbase_above(fork_height)]
            uow.utxos.delete_coinbase_above(fork_height)
            # Other outputs created above the fork become unconfirmed; the rescan re-confirms
            # them if their transaction made it into the new branch.
            uow.utxos.unconfirm_above(fork_height)
            uow.utxos.unspend_above(fork_height)
            uow.cold_utxos.delete_coinbase_above(fork_height)
            uow.cold_utxos.unconfirm_above(fork_height)
            uow.cold_utxos.unspend_above(fork_height)
            reverted = uow.transactions.confirmed_above(fork_height)
            for tx in reverted:
                tx.status = "broadcast"
                tx.block_height = None
                tx.block_hash = None
                tx.confirmed_at = None
                uow.withdrawals.move_in_transaction(
                    tx.id,
                    WithdrawalStatus.CONFIRMED.value,
                    WithdrawalStatus.BROADCAST.value,
                    now=utcnow(),
                )
            uow.scanned_blocks.delete_above(fork_height)
            for watcher in self.rollback_watchers:
                watcher(uow, fork_height)
            uow.audit(
                ACTOR,
                "chain.reorg",
                "chain",
                None,
                {
                    "fork_height": fork_height,
                    "unconfirmed_txids": [t.txid for t in reverted],
                    "dropped_coinbase_outputs": dropped,
                },
            )
            log.warning("reorganisation: rolled back to height %d", fork_height)

    def _scan_block(
        self,
        height: int,
        block_hash: str,
        raw: bytes,
        watched: dict[str, Address],
        cold: dict[str, WatchedColdAddress],
    ) -> bool:
        block = CBlock.deserialize(raw)
        txids = [b2lx(tx.GetTxid()) for tx in block.vtx]
        with self.db.write() as uow:
            previous = uow.scanned_blocks.get(height - 1)
            if previous is not None and b2lx(block.hashPrevBlock) != previous.hash:
                return False
            # Two indexed lookups per block instead of one query per input and per tx: a
            # mainnet block has thousands of each.
            our_coins = _coins_spent_in(uow, block.vtx[1:])
            own_txids = _own_transactions_among(uow, txids)
            cold_coins = _cold_coins_spent_in(uow, block.vtx[1:])
            foreign: list[tuple[str, Utxo]] = []
            for position, (tx, txid) in enumerate(zip(block.vtx, txids, strict=True)):
                for txin in tx.vin if position > 0 else ():
                    outpoint = (b2lx(txin.prevout.hash), txin.prevout.n)
                    coin = our_coins.get(outpoint)
                    if coin is not None:
                        coin.spent_by_txid = txid
                        coin.spent_height = height
                        if txid not in own_txids:
                            foreign.append((txid, coin))  # we never signed this spend
                    cold_coin = cold_coins.get(outpoint)
                    if cold_coin is not None:
                        cold_coin.spent_by_txid = txid
                        cold_coin.spent_height = height
                self._record_outputs(uow, tx, txid, height, block_hash, position == 0, watched)
                _record_cold_outputs(uow, tx, txid, height, block_hash, position == 0, cold)
                if txid in own_txids:
                    self._confirm_own(uow, txid, height, block_hash)
            _confirm_refills(uow, txids, height)
            uow.scanned_blocks.add(ScannedBlock(height=height, hash=block_hash))
            for watcher in self.block_watchers:
                watcher(uow, height, foreign, sorted(own_txids))
        return True

    def _record_outputs(
        self,
        uow: UnitOfWork,
        tx: object,
        txid: str,
        height: int,
        block_hash: str,
        is_coinbase: bool,
        watched: dict[str, Address],
    ) -> None:
        for vout, txout in enumerate(tx.vout):  # type: ignore[attr-defined]
            script_hex = bytes(txout.scriptPubKey).hex()
            address = watched.get(script_hex)
            if address is None:
                continue
            existing = uow.utxos.by_outpoint(txid, vout)
            if existing is not None:
                existing.block_height = height
                existing.block_hash = block_hash
                continue
            uow.utxos.add(
                Utxo(
                    wallet_id=address.wallet_id,
                    address_id=address.id,
                    txid=txid,
                    vout=vout,
                    amount_sat=int(txout.nValue),
                    script_pubkey=script_hex,
                    is_coinbase=is_coinbase,
                    block_height=height,
                    block_hash=block_hash,
                )
            )
            if self._extend_lookahead(uow, address):
                watched.update(_watched_scripts(uow))
            if _is_retired(uow, address):
                # After a key rotation: someone still pays an old address. Flag it; the
                # rotation pass sweeps it to cold (walletsvc.incident.rotation).
                uow.audit(
                    ACTOR,
                    "deposit.to_retired_address",
                    "address",
                    address.id,
                    {
                        "txid": txid,
                        "vout": vout,
                        "amount_sat": int(txout.nValue),
                        "address": address.address,
                        "epoch": address.epoch,
                    },
                )
                log.warning("deposit to retired address %s (%s)", address.address, txid)
            if address.chain == 0:
                uow.audit(
                    ACTOR,
                    "deposit.seen",
                    "address",
                    address.id,
                    {
                        "txid": txid,
                        "vout": vout,
                        "amount_sat": int(txout.nValue),
                        "height": height,
                        "address": address.address,
                    },
                )

    @staticmethod
    def _extend_lookahead(uow: ReadUnitOfWork, address: Address) -> bool:
        """Keep LOOKAHEAD unused addresses past ``address``; True if new ones were derived."""
        wallet = uow.wallets.get(address.wallet_id)
        epoch = uow.key_epochs.find(address.wallet_id, address.epoch)
        if wallet is None or epoch is None:
            return False
        return ensure_derived(uow, wallet, epoch, address.chain, address.index + LOOKAHEAD) > 0

    @staticmethod
    def _confirm_own(uow: UnitOfWork, txid: str, height: int, block_hash: str) -> None:
        tx = uow.transactions.by_txid(txid)
        if tx is None or tx.block_height is not None:
            return
        if tx.status == "replaced":
            # A fee-bumped original confirmed after all: its replacements can never confirm.
            from walletsvc.treasury.fee_bumps import revive_original

            revive_original(uow, tx)
        tx.status = "confirmed"
        tx.block_height = height
        tx.block_hash = block_hash
        tx.confirmed_at = utcnow()
        ids = uow.withdrawals.ids_in_transaction(
            tx.id, [WithdrawalStatus.BROADCAST.value, WithdrawalStatus.SIGNED.value]
        )
        uow.withdrawals.set_status(ids, WithdrawalStatus.CONFIRMED.value, now=utcnow())
        uow.audit(
            ACTOR,
            "transaction.confirmed",
            "chain_transaction",
            tx.id,
            {"txid": txid, "height": height, "withdrawals": ids},
        )


def _is_retired(uow: ReadUnitOfWork, address: Address) -> bool:
    if address.retired_at is not None:
        return True
    wallet = uow.wallets.get(address.wallet_id)  # the identity map makes this cheap
    return wallet is not None and address.epoch < wallet.current_epoch


def _coins_spent_in(uow: ReadUnitOfWork, txs: Sequence[Any]) -> dict[tuple[str, int], Utxo]:
    """Our unspent coins that some input of ``txs`` spends, by outpoint."""
    prevout_txids = sorted({b2lx(txin.prevout.hash) for tx in txs for txin in tx.vin})
    return {(coin.txid, coin.vout): coin for coin in uow.utxos.unspent_of_txids(prevout_txids)}


def _confirm_refills(uow: UnitOfWork, txids: list[str], height: int) -> None:
    """Refills from cold whose transaction is in this block."""
    for refill in uow.refills.by_txids(txids):
        if refill.status in ("signed", "broadcast"):
            refill.status = "confirmed"
            details = {"txid": refill.txid, "height": height}
            uow.audit(ACTOR, "refill.confirmed", "refill", refill.id, details)


def _cold_coins_spent_in(
    uow: ReadUnitOfWork, txs: Sequence[Any]
) -> dict[tuple[str, int], ColdUtxo]:
    prevout_txids = sorted({b2lx(txin.prevout.hash) for tx in txs for txin in tx.vin})
    coins = uow.cold_utxos.unspent_of_txids(prevout_txids)
    return {(coin.txid, coin.vout): coin for coin in coins}


def _record_cold_outputs(
    uow: UnitOfWork,
    tx: Any,
    txid: str,
    height: int,
    block_hash: str,
    is_coinbase: bool,
    cold: dict[str, WatchedColdAddress],
) -> None:
    """Outputs paying a cold address: the cold balance (watch-only, no key involved)."""
    for vout, txout in enumerate(tx.vout):
        script_hex = bytes(txout.scriptPubKey).hex()
        watched = cold.get(script_hex)
        if watched is None:
            continue
        existing = uow.cold_utxos.by_outpoint(txid, vout)
        if existing is not None:
            existing.block_height, existing.block_hash = height, block_hash
            continue
        destination = uow.cold_destinations.get(watched.destination_id)
        if destination is not None and destination.next_index <= watched.index:
            # Paid straight to cold storage: the next sweep or refill change takes a later
            # address, so no cold address is paid twice by us.
            destination.next_index = watched.index + 1
        uow.cold_utxos.add(
            ColdUtxo(
                wallet_id=watched.wallet_id,
                cold_destination_id=watched.destination_id,
                cold_index=watched.index,
                txid=txid,
                vout=vout,
                amount_sat=int(txout.nValue),
                script_pubkey=script_hex,
                is_coinbase=is_coinbase,
                block_height=height,
                block_hash=block_hash,
            )
        )


def _own_transactions_among(uow: ReadUnitOfWork, txids: list[str]) -> set[str]:
    return uow.transactions.txids_among(txids)


def _watched_scripts(uow: ReadUnitOfWork) -> dict[str, Address]:
    return {a.script_pubkey: a for a in uow.addresses.all()}
