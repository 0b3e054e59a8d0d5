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
    Wallet,
    new_id,
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
        # Cold storage's watched scripts: derived from the cold destinations' descriptors,
        # once per pass (our own addresses are looked up per block, by script).
        with self.db.read() as uow:
            cold = watched_cold_scripts(uow)
        while height <= tip.height and scanned < max_blocks:
            block_hash = self.chain.block_hash(height)
            if block_hash is None:
                break
            raw = self.chain.block_bytes(block_hash)
            if not self._scan_block(height, block_hash, raw, cold):
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
        self, height: int, block_hash: str, raw: bytes, cold: dict[str, WatchedColdAddress]
    ) -> bool:
        # Outside the lock: decoding the block, its txids and every output's script.
        block = CBlock.deserialize(raw)
        txids = [b2lx(tx.GetTxid()) for tx in block.vtx]
        outputs = [
            _Output(position, txid, vout, bytes(txout.scriptPubKey).hex(), int(txout.nValue))
            for position, (tx, txid) in enumerate(zip(block.vtx, txids, strict=True))
            for vout, txout in enumerate(tx.vout)
        ]
        with self.db.write() as uow:
            previous = uow.scanned_blocks.get(height - 1)
            if previous is not None and b2lx(block.hashPrevBlock) != previous.hash:
                return False
            # Batched look-ups, each cost independent of how many addresses we watch: our
            # coins spent, our transactions, our addresses paid, the outputs already known.
            our_coins = _coins_spent_in(uow, block.vtx[1:])
            own_txids = _own_transactions_among(uow, txids)
            paid = _BlockPayments(uow, [o.script_hex for o in outputs])
            known = uow.utxos.of_txids(txids)
            cold_coins = _cold_coins_spent_in(uow, block.vtx[1:])
            foreign: list[tuple[str, Utxo]] = []
            by_position: dict[int, list[_Output]] = {}
            for output in outputs:
                by_position.setdefault(output.position, []).append(output)
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
                for output in by_position.get(position, []):
                    self._record_output(uow, output, height, block_hash, paid, known)
                    if output.script_hex in cold:
                        _record_cold_output(uow, output, height, block_hash, cold)
                if txid in own_txids:
                    paid.insert_new_coins()  # what confirming our transaction may look at
                    self._confirm_own(uow, txid, height, block_hash)
            paid.insert_new_coins()
            _confirm_refills(uow, txids, height)
            uow.scanned_blocks.add(ScannedBlock(height=height, hash=block_hash))
            for watcher in self.block_watchers:
                watcher(uow, height, foreign, sorted(own_txids))
        return True

    def _record_output(
        self,
        uow: UnitOfWork,
        output: _Output,
        height: int,
        block_hash: str,
        paid: _BlockPayments,
        known: dict[tuple[str, int], Utxo],
    ) -> None:
        address = paid.address(output.script_hex)
        if address is None:
            return
        existing = known.get((output.txid, output.vout))
        if existing is not None:
            existing.block_height = height
            existing.block_hash = block_hash
            return
        paid.new_coin(
            {
                "id": new_id(),
                "wallet_id": address.wallet_id,
                "address_id": address.id,
                "txid": output.txid,
                "vout": output.vout,
                "amount_sat": output.amount_sat,
                "script_pubkey": output.script_hex,
                "is_coinbase": output.position == 0,
                "block_height": height,
                "block_hash": block_hash,
            }
        )
        paid.used(address)
        if _is_retired(address, paid.wallet(address.wallet_id)):
            # After a key rotation: someone still pays an old address. Flag it; the
            # rotation pass sweeps it to cold (walletsvc.incident.rotation).
            uow.audit(
                ACTOR,
                "deposit.to_retired_address",
                "address",
                address.id,
                {
                    "txid": output.txid,
                    "vout": output.vout,
                    "amount_sat": output.amount_sat,
                    "address": address.address,
                    "epoch": address.epoch,
                },
            )
            log.warning("deposit to retired address %s (%s)", address.address, output.txid)
        if address.chain == 0:
            uow.audit(
                ACTOR,
                "deposit.seen",
                "address",
                address.id,
                {
                    "txid": output.txid,
                    "vout": output.vout,
                    "amount_sat": output.amount_sat,
                    "height": height,
                    "address": address.address,
                },
            )

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


def _is_retired(address: Address, wallet: Wallet | None) -> bool:
    if address.retired_at is not None:
        return True
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


def _record_cold_output(
    uow: UnitOfWork,
    output: _Output,
    height: int,
    block_hash: str,
    cold: dict[str, WatchedColdAddress],
) -> None:
    """An output paying a cold address: the cold balance (watch-only, no key involved)."""
    watched = cold[output.script_hex]
    existing = uow.cold_utxos.by_outpoint(output.txid, output.vout)
    if existing is not None:
        existing.block_height, existing.block_hash = height, block_hash
        return
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
            txid=output.txid,
            vout=output.vout,
            amount_sat=output.amount_sat,
            script_pubkey=output.script_hex,
            is_coinbase=output.position == 0,
            block_height=height,
            block_hash=block_hash,
        )
    )


def _own_transactions_among(uow: ReadUnitOfWork, txids: list[str]) -> set[str]:
    return uow.transactions.txids_among(txids)


@dataclass(frozen=True)
class _Output:
    position: int  # the transaction's position in the block (0: the coinbase)
    txid: str
    vout: int
    script_hex: str
    amount_sat: int


class _BlockPayments:
    """Which of one block's output scripts are our addresses, kept true as the look-ahead
    grows while the block is recorded.

    The block's scripts are looked up once, in batches, by the unique script index: the cost
    is the block's size, not the number of addresses we watch. When a payment uses an address
    near the end of its look-ahead window, the window is extended (new addresses derived) and
    only the block's still-unmatched scripts are looked up again, so an output paying a
    freshly derived address later in the same block is still ours.
    """

    def __init__(self, uow: UnitOfWork, scripts: list[str]) -> None:
        self._uow = uow
        self._unmatched = set(scripts)
        self._ours: dict[str, Address] = {}
        self._ensured: dict[tuple[str, int, int], int] = {}
        # Held here, not only in the session's weak identity map: a wallet looked up per
        # output would be loaded again (and the session flushed) for every output.
        self._wallets: dict[str, Wallet | None] = {}
        self._new_coins: list[dict[str, object]] = []
        self._match(scripts)

    def new_coin(self, row: dict[str, object]) -> None:
        self._new_coins.append(row)

    def insert_new_coins(self) -> None:
        """Insert the coins recorded so far, in one statement."""
        self._uow.utxos.add_many(self._new_coins)
        self._new_coins = []

    def wallet(self, wallet_id: str) -> Wallet | None:
        if wallet_id not in self._wallets:
            self._wallets[wallet_id] = self._uow.wallets.get(wallet_id)
        return self._wallets[wallet_id]

    def address(self, script_hex: str) -> Address | None:
        return self._ours.get(script_hex)

    def used(self, address: Address) -> None:
        """``address`` was paid: keep LOOKAHEAD unused addresses past it."""
        key = (address.wallet_id, address.epoch, address.chain)
        target = address.index + LOOKAHEAD
        if self._ensured.get(key, -1) >= target:
            return
        self._ensured[key] = target
        wallet = self.wallet(address.wallet_id)
        epoch = self._uow.key_epochs.find(address.wallet_id, address.epoch)
        if wallet is None or epoch is None:
            return
        if ensure_derived(self._uow, wallet, epoch, address.chain, target) > 0:
            self._match(list(self._unmatched))

    def _match(self, scripts: list[str]) -> None:
        found = self._uow.addresses.with_scripts(scripts) if scripts else {}
        self._ours.update(found)
        self._unmatched.difference_update(found)
