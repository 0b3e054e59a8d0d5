"""An embedded regtest chain: blocks we build, validated and stored by libbitcoinkernel.

Core's consensus code (through walletsvc.chain.kernel) decides which blocks are valid and which
branch is active; this module keeps what a node keeps beside it: a UTXO view of the active
chain, a txid index, and a small mempool with Bitcoin Core's acceptance rules and reject
reasons (the policy subset a hot wallet meets: conflicts, Bitcoin Core 29's full-RBF
replacement rules, coinbase maturity, relay fee, finality and, in the kernel, every input
script with all flags).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bitcoin.core import CBlock, CBlockHeader, CTransaction, b2lx
from bitcoin.core.serialize import SerializationError, SerializationTruncationError

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.devchain import blocks
from walletsvc.devchain.kernel_chainstate import (
    KernelBlockRejected,
    KernelChainstate,
    KernelUnavailable,
)
from walletsvc.domain.errors import (
    ChainRejected,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    VerificationFailed,
)
from walletsvc.domain.money import COIN, MAX_MONEY
from walletsvc.domain.network import Network
from walletsvc.domain.ports import (
    AcceptResult,
    BlockRef,
    MempoolEntry,
    MempoolListener,
    SpentOutput,
)
from walletsvc.domain.sizes import MAX_STANDARD_TX_WEIGHT

log = logging.getLogger(__name__)

Outpoint = tuple[str, int]

MIN_RELAY_SAT_PER_VB = 1
# Replacement policy of Bitcoin Core 29 (doc/policy/mempool-replacements.md): full RBF, so a
# conflict may replace any mempool transaction, whether it signals BIP125 or not.
MAX_REPLACEMENT_CANDIDATES = 100  # rule 5
# Core 29's default -incrementalrelayfee (sat per 1000 vB) since 29.1 (1000 in 29.0): rule 4's
# price of the replacement's own relay, 0.1 sat/vB. The relay floor above stays at 29.0's
# 1 sat/vB, stricter than 29.1's default, as a node with -minrelaytxfee=0.00001 would be.
INCREMENTAL_RELAY_SAT_PER_KVB = 100
SEQUENCE_FINAL = 0xFFFFFFFF
LOCKTIME_THRESHOLD = 500_000_000
# BIP68 relative lock-time fields of nSequence.
SEQUENCE_DISABLE_FLAG = 1 << 31
SEQUENCE_TYPE_FLAG = 1 << 22
SEQUENCE_MASK = 0x0000FFFF

LOCK_FILE = "chain.lock"
MEMPOOL_FILE = "mempool.json"
# Every block the kernel accepted, length-prefixed and fsynced: the kernel only flushes its
# block index on a clean close, so after a crash we hand it back what it lost.
BLOCK_LOG = "blocks.log"
KERNEL_DIR = "kernel"


class ChainLocked(DependencyUnavailable):
    """Another process (usually the running service) holds the embedded chain's lock."""

    code = "chain_locked"


@dataclass(frozen=True)
class Utxo:
    """An unspent output of the active chain."""

    script_pubkey: bytes
    amount_sat: int
    height: int
    coinbase: bool


@dataclass(frozen=True)
class MempoolTx:
    """A transaction accepted into the embedded mempool."""

    txid: str
    raw: bytes
    fee_sat: int
    vsize: int
    weight: int
    parents: frozenset[str]  # mempool txids whose outputs it spends
    prevouts: tuple[Outpoint, ...]
    time: int

    @property
    def fee_rate(self) -> float:
        return self.fee_sat / self.vsize


class _Reject(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason


@dataclass(frozen=True)
class _Candidate:
    entry: MempoolTx
    tx: CTransaction
    evict: frozenset[str]


class EmbeddedChain:
    """A regtest ``ChainBackend`` whose blocks libbitcoinkernel validates and stores.

    Layout of ``chain_dir``: ``kernel/`` (the kernel's blocks and chainstate), ``blocks.log``
    (every accepted block, replayed into the kernel after an unclean stop), ``mempool.json``
    (raw transactions, re-validated on start) and ``chain.lock`` (an exclusive ``flock``; a
    second opener, even in the same process, gets ``ChainLocked``). One instance is shared by
    threads: every public method holds one re-entrant lock.
    """

    def __init__(
        self,
        chain_dir: Path,
        *,
        fee_rate_sat_per_vb: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = Path(chain_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._fee_rate = fee_rate_sat_per_vb
        self._clock = clock
        self._lock = threading.RLock()
        self._verifier = KernelScriptVerifier()
        self._lock_fd: int | None = self._acquire_dir_lock()
        try:
            self._ks: KernelChainstate | None = KernelChainstate(self._dir / KERNEL_DIR)
        except KernelUnavailable as exc:
            self._release_dir_lock()
            raise DependencyUnavailable(str(exc)) from exc
        self._utxos: dict[Outpoint, Utxo] = {}
        self._tx_index: dict[str, tuple[str, int]] = {}  # txid -> (block hash, height)
        self._active: list[str] = []  # our mirror of the kernel's active chain, by height
        self._mempool: dict[str, MempoolTx] = {}  # insertion order is a topological order
        self._mempool_txs: dict[str, CTransaction] = {}
        self._spenders: dict[Outpoint, str] = {}
        self._miner: threading.Thread | None = None
        # Told each txid the mempool accepts (the theft shield's watcher, the RPC server's
        # ZMQ publisher); called under the chain lock, so a listener only records it.
        self._mempool_listeners: list[MempoolListener] = []
        self._miner_stop = threading.Event()
        try:
            self._replay_block_log()
            self._block_log = open(self._dir / BLOCK_LOG, "ab")  # noqa: SIM115 - closed in close()
            self._rebuild_view()
            self._refresh_mempool(self._load_mempool_file())
        except BaseException:
            if hasattr(self, "_block_log"):
                self._block_log.close()
            ks, self._ks = self._ks, None
            ks.close()
            self._release_dir_lock()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def _acquire_dir_lock(self) -> int:
        fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ChainLocked(
                f"the embedded chain in {self._dir} is in use by another process "
                "or instance (is the service running?)"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def close(self) -> None:
        """Stop the auto-miner, persist the mempool, release the kernel and the lock.

        Idempotent; a new EmbeddedChain on the same directory may be opened afterwards.
        """
        self.stop_auto_mining()
        with self._lock:
            if self._ks is None:
                return
            self._persist_mempool()
            self._block_log.close()
            ks, self._ks = self._ks, None
            ks.close()
            self._release_dir_lock()

    def start_auto_mining(self, interval_s: float) -> None:
        """Mine one block every ``interval_s`` while the mempool is not empty (``make run``)."""
        if interval_s <= 0 or self._miner is not None:
            return
        self._miner_stop.clear()

        def loop() -> None:
            while not self._miner_stop.wait(interval_s):
                try:
                    with self._lock:
                        if self._ks is not None and self._mempool:
                            self.mine(1)
                except Exception:
                    log.exception("embedded auto-miner failed to mine a block")

        self._miner = threading.Thread(target=loop, name="embedded-miner", daemon=True)
        self._miner.start()

    def stop_auto_mining(self) -> None:
        miner, self._miner = self._miner, None
        if miner is not None:
            self._miner_stop.set()
            miner.join()

    def __enter__(self) -> EmbeddedChain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _kernel(self) -> KernelChainstate:
        if self._ks is None:
            raise DependencyUnavailable("the embedded chain is closed")
        return self._ks

    @property
    def chain_dir(self) -> Path:
        return self._dir

    # -- ChainBackend ----------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return Network.REGTEST

    def tip(self) -> BlockRef:
        with self._lock:
            height, block_hash = self._kernel.tip()
            return BlockRef(height=height, hash=block_hash)

    def block_hash(self, height: int) -> str | None:
        with self._lock:
            return self._kernel.hash_at(height)

    def block_bytes(self, block_hash: str) -> bytes:
        with self._lock:
            raw = self._kernel.block_bytes(block_hash)
        if raw is None:
            raise NotFound(f"block {block_hash} not found", field="block_hash")
        return raw

    def broadcast(self, raw_tx: bytes, *, max_fee_rate_sat_per_vb: int | None = None) -> str:
        # In process there is no maxfeerate guard to raise (the RPC server applies one).
        with self._lock:
            txid = self._known_txid(raw_tx)
            if txid is not None:
                return txid
            try:
                candidate = self._check(raw_tx)
            except _Reject as rej:
                raise ChainRejected(rej.message, reason=rej.reason) from None
            self._admit(candidate)
            self._persist_mempool()
            log.info("embedded mempool accepted %s", candidate.entry.txid)
            return candidate.entry.txid

    def test_accept(self, raw_tx: bytes) -> AcceptResult:
        with self._lock:
            try:
                candidate = self._check(raw_tx)
            except _Reject as rej:
                return AcceptResult(txid=_txid_or_empty(raw_tx), allowed=False, reason=rej.reason)
            return AcceptResult(txid=candidate.entry.txid, allowed=True)

    def preview(self, raw_tx: bytes) -> MempoolTx:
        """What the mempool would record for ``raw_tx`` (fee, vsize); raises ChainRejected."""
        with self._lock:
            try:
                return self._check(raw_tx).entry
            except _Reject as rej:
                raise ChainRejected(rej.message, reason=rej.reason) from None

    def mempool_txids(self) -> set[str]:
        with self._lock:
            return set(self._mempool)

    def fee_rate_sat_per_vb(self, target_blocks: int) -> int:
        return self._fee_rate

    # -- MempoolSource ---------------------------------------------------------------------

    def subscribe(self, listener: MempoolListener) -> None:
        """Call ``listener(txid)`` for every transaction the mempool accepts from now on."""
        with self._lock:
            self._mempool_listeners.append(listener)

    def mempool_spenders(self, outpoints: Sequence[Outpoint]) -> dict[Outpoint, str]:
        with self._lock:
            return {op: self._spenders[op] for op in outpoints if op in self._spenders}

    def mempool_transaction(self, txid: str) -> bytes | None:
        with self._lock:
            entry = self._mempool.get(txid)
            return None if entry is None else entry.raw

    def mempool_entry(self, txid: str) -> MempoolEntry | None:
        with self._lock:
            entry = self._mempool.get(txid)
            if entry is None:
                return None
            family = self._descendants([txid])
            return MempoolEntry(
                txid=txid,
                raw=entry.raw,
                fee_sat=entry.fee_sat,
                vsize=entry.vsize,
                descendant_fees_sat=sum(self._mempool[t].fee_sat for t in family),
            )

    # -- extra queries (dev tools, the RPC server, tests) ----------------------------------

    def get_transaction(self, txid: str) -> bytes | None:
        """Raw transaction from the mempool or the active chain, else None."""
        with self._lock:
            entry = self._mempool.get(txid)
            if entry is not None:
                return entry.raw
            located = self._tx_index.get(txid)
            if located is None:
                return None
            raw_block = self._kernel.block_bytes(located[0])
        assert raw_block is not None
        for tx in CBlock.deserialize(raw_block).vtx:
            if blocks.txid_hex(tx) == txid:
                return bytes(tx.serialize())
        return None  # pragma: no cover - the index and the block disagree

    def transaction_block(self, txid: str) -> BlockRef | None:
        """The active-chain block that contains ``txid``, or None."""
        with self._lock:
            located = self._tx_index.get(txid)
            return None if located is None else BlockRef(height=located[1], hash=located[0])

    def confirmations(self, txid: str) -> int:
        """Confirmations of ``txid`` on the active chain (0 in the mempool or unknown)."""
        with self._lock:
            located = self._tx_index.get(txid)
            if located is None:
                return 0
            return len(self._active) - located[1]

    def utxo(self, txid: str, vout: int) -> Utxo | None:
        with self._lock:
            return self._utxos.get((txid, vout))

    def utxos_for_script(self, script_pubkey: bytes) -> dict[Outpoint, Utxo]:
        """Confirmed unspent outputs paying ``script_pubkey`` (ignores mempool spends)."""
        with self._lock:
            return {op: u for op, u in self._utxos.items() if u.script_pubkey == script_pubkey}

    def mempool_entries(self) -> list[MempoolTx]:
        with self._lock:
            return list(self._mempool.values())

    def block_height(self, block_hash: str) -> int | None:
        """Height of any block the kernel stored (active or not), else None."""
        with self._lock:
            return self._kernel.height_of(block_hash)

    def is_active(self, block_hash: str) -> bool:
        with self._lock:
            return self._kernel.in_active_chain(block_hash)

    def median_time_past(self, block_hash: str) -> int:
        with self._lock:
            return blocks.median_time_past(self._kernel.ancestor_times(block_hash))

    # -- mining ----------------------------------------------------------------------------

    def mine(self, n: int, to_script_pubkey: bytes | None = None) -> list[str]:
        """Mine ``n`` blocks on the tip with the mempool's transactions; returns their hashes."""
        if n < 0:
            raise ValueError("n must not be negative")
        script = blocks.BURN_SCRIPT_PUBKEY if to_script_pubkey is None else to_script_pubkey
        mined: list[str] = []
        with self._lock:
            try:
                for _ in range(n):
                    height, tip = self._kernel.tip()
                    txs, fees = self._block_template()
                    block = blocks.assemble_block(
                        tip,
                        height + 1,
                        txs,
                        fees,
                        coinbase_script_pubkey=script,
                        timestamp=self._next_time(tip),
                    )
                    block_hash = blocks.block_hash_hex(block)
                    self._submit(bytes(block.serialize()))
                    if self._kernel.tip()[1] != block_hash:
                        raise ChainRejected(
                            f"the kernel did not connect mined block {block_hash}",
                            reason="bad-block",
                        )
                    mined.append(block_hash)
            finally:
                self._sync_block_log()  # one fsync per call, not per block
        return mined

    def generate_block(
        self,
        txs: Sequence[str | bytes],
        to_script_pubkey: bytes | None = None,
        *,
        submit: bool = True,
    ) -> tuple[str, bytes]:
        """Core's ``generateblock``: one block on the tip with exactly ``txs``, in that order.

        A ``str`` is the txid of a mempool transaction, ``bytes`` a raw transaction that need
        not be in the mempool (say, an original a miner saw before its replacement). Returns
        the block's hash and bytes; with ``submit`` the kernel validates and connects it and
        the mempool drops what it confirmed or conflicts with. Without ``submit`` the block is
        only assembled, not validated.
        """
        script = blocks.BURN_SCRIPT_PUBKEY if to_script_pubkey is None else to_script_pubkey
        with self._lock:
            parsed = [self._block_tx(item) for item in txs]
            height, tip = self._kernel.tip()
            block = blocks.assemble_block(
                tip,
                height + 1,
                parsed,
                self._fees_of(parsed),
                coinbase_script_pubkey=script,
                timestamp=self._next_time(tip),
            )
            block_hash = blocks.block_hash_hex(block)
            raw = bytes(block.serialize())
            if not submit:
                return block_hash, raw
            try:
                self._submit(raw)
            finally:
                self._sync_block_log()
            if self._kernel.tip()[1] != block_hash:
                raise ChainRejected(
                    f"the kernel did not connect block {block_hash}", reason="bad-block"
                )
            log.info("embedded chain mined %s with %d chosen tx(s)", block_hash, len(parsed))
            return block_hash, raw

    def _block_tx(self, item: str | bytes) -> CTransaction:
        if isinstance(item, str):
            tx = self._mempool_txs.get(item)
            if tx is None:
                raise NotFound(f"Transaction {item} not in mempool.", field="txid")
            return tx
        try:
            return CTransaction.deserialize(item)
        except (SerializationError, SerializationTruncationError, ValueError, AssertionError):
            raise InvalidInput("Transaction decode failed", field="txs") from None

    def build_block(
        self,
        parent_hash: str,
        txs: list[bytes],
        *,
        coinbase_script_pubkey: bytes,
        extra_nonce: int = 0,
    ) -> bytes:
        """A block on any known parent with exactly ``txs`` (dev/test helper; not submitted).

        The coinbase claims the subsidy plus the fees of ``txs`` as far as the active chain's
        UTXO view and ``txs`` themselves can price them (unknown inputs count as zero fee).
        """
        with self._lock:
            parent_height = self._kernel.height_of(parent_hash)
            if parent_height is None:
                raise NotFound(f"parent block {parent_hash} not found", field="parent_hash")
            parsed = [CTransaction.deserialize(raw) for raw in txs]
            fees = self._fees_of(parsed)
            block = blocks.assemble_block(
                parent_hash,
                parent_height + 1,
                parsed,
                fees,
                coinbase_script_pubkey=coinbase_script_pubkey,
                timestamp=self._next_time(parent_hash),
                extra_nonce=extra_nonce,
            )
            return bytes(block.serialize())

    def submit_block(self, raw: bytes) -> bool:
        """Give a block to the kernel; True if the active tip changed (maybe by a reorg).

        Raises ChainRejected when the kernel finds the block invalid. A valid block on a
        branch with less (or equal) work is stored and returns False.
        """
        with self._lock:
            changed = self._submit(raw)
            self._sync_block_log()
            return changed

    def _submit(self, raw: bytes) -> bool:
        before = self._kernel.tip()[1]
        try:
            self._kernel.process_block(raw)
        except KernelBlockRejected as exc:
            raise ChainRejected(str(exc), reason="bad-block") from exc
        self._block_log.write(len(raw).to_bytes(4, "little") + raw)
        changed = self._kernel.tip()[1] != before
        if changed:
            self._sync_tip()
        return changed

    def _sync_block_log(self) -> None:
        self._block_log.flush()
        os.fsync(self._block_log.fileno())

    def _replay_block_log(self) -> None:
        """Give the kernel back any logged block it does not have (after an unclean stop)."""
        path = self._dir / BLOCK_LOG
        if not path.exists():
            return
        data = path.read_bytes()
        offset = replayed = 0
        while offset + 4 <= len(data):
            size = int.from_bytes(data[offset : offset + 4], "little")
            raw = data[offset + 4 : offset + 4 + size]
            if len(raw) < size:
                break  # a torn last record: that block was never acknowledged
            offset += 4 + size
            block_hash = blocks.block_hash_hex(CBlockHeader.deserialize(raw[:80]))
            if self._kernel.block_bytes(block_hash) is not None:
                continue
            try:
                self._kernel.process_block(raw)
                replayed += 1
            except KernelBlockRejected as exc:
                log.warning("logged block %s no longer accepted: %s", block_hash, exc)
        if offset != len(data):
            with open(path, "r+b") as f:
                f.truncate(offset)
        if replayed:
            log.warning("replayed %d block(s) the kernel lost in an unclean shutdown", replayed)

    def _next_time(self, parent_hash: str) -> int:
        mtp = blocks.median_time_past(self._kernel.ancestor_times(parent_hash))
        return blocks.next_block_time(int(self._clock()), mtp)

    def _block_template(self) -> tuple[list[CTransaction], int]:
        budget = blocks.MAX_BLOCK_WEIGHT - blocks.COINBASE_WEIGHT_RESERVE
        chosen: list[CTransaction] = []
        included: set[str] = set()
        fees = 0
        weight = 0
        for txid, entry in self._mempool.items():
            # Insertion order is topological: a parent was accepted before its children.
            if not entry.parents <= included or weight + entry.weight > budget:
                continue
            chosen.append(self._mempool_txs[txid])
            included.add(txid)
            fees += entry.fee_sat
            weight += entry.weight
        return chosen, fees

    def _fees_of(self, txs: list[CTransaction]) -> int:
        outputs: dict[Outpoint, int] = {}
        for tx in txs:
            txid = blocks.txid_hex(tx)
            for index, out in enumerate(tx.vout):
                outputs[(txid, index)] = out.nValue
        total = 0
        for tx in txs:
            spent = 0
            for txin in tx.vin:
                op = _outpoint(txin)
                utxo = self._utxos.get(op)
                spent += utxo.amount_sat if utxo is not None else outputs.get(op, 0)
            total += max(0, spent - sum(out.nValue for out in tx.vout))
        return total

    # -- chain view ------------------------------------------------------------------------

    def _sync_tip(self) -> None:
        """Follow the kernel's active chain: extend the view, or rebuild it after a reorg."""
        height, tip = self._kernel.tip()
        if self._active and self._active[-1] == tip:
            return
        fork = min(len(self._active) - 1, height)
        while fork >= 0 and self._kernel.hash_at(fork) != self._active[fork]:
            fork -= 1
        disconnected = self._active[fork + 1 :]
        resurrected: list[bytes] = []
        if disconnected:
            log.warning(
                "embedded chain reorganised: %d block(s) disconnected above height %d",
                len(disconnected),
                fork,
            )
            for block_hash in disconnected:
                raw_block = self._kernel.block_bytes(block_hash)
                if raw_block is None:  # pragma: no cover - the kernel keeps stale blocks
                    continue
                resurrected.extend(
                    bytes(tx.serialize()) for tx in CBlock.deserialize(raw_block).vtx[1:]
                )
            self._rebuild_view()
        else:
            for h in range(len(self._active), height + 1):
                self._connect(h)
        self._refresh_mempool(resurrected)

    def _rebuild_view(self) -> None:
        self._utxos.clear()
        self._tx_index.clear()
        self._active.clear()
        height, _ = self._kernel.tip()
        for h in range(height + 1):
            self._connect(h)

    def _connect(self, height: int) -> None:
        block_hash = self._kernel.hash_at(height)
        assert block_hash is not None
        raw_block = self._kernel.block_bytes(block_hash)
        assert raw_block is not None
        self._active.append(block_hash)
        for tx in CBlock.deserialize(raw_block).vtx:
            txid = blocks.txid_hex(tx)
            self._tx_index[txid] = (block_hash, height)
            coinbase = bool(tx.is_coinbase())
            if not coinbase:
                for txin in tx.vin:
                    self._utxos.pop(_outpoint(txin), None)
            if height == 0:
                continue  # the genesis coinbase is not spendable (not in Core's UTXO set)
            for index, out in enumerate(tx.vout):
                script = bytes(out.scriptPubKey)
                if script[:1] == b"\x6a":  # OP_RETURN: provably unspendable, never a UTXO
                    continue
                self._utxos[(txid, index)] = Utxo(script, int(out.nValue), height, coinbase)

    # -- mempool ---------------------------------------------------------------------------

    def _known_txid(self, raw_tx: bytes) -> str | None:
        """The txid if the transaction is already in the mempool or the active chain."""
        txid = _txid_or_empty(raw_tx)
        if txid and (txid in self._mempool or txid in self._tx_index):
            return txid
        return None

    def _check(self, raw_tx: bytes) -> _Candidate:
        """Bitcoin Core's mempool acceptance (the subset we need); raises _Reject."""
        try:
            tx = CTransaction.deserialize(raw_tx)
        except (SerializationError, SerializationTruncationError, ValueError, AssertionError):
            raise _Reject("TX decode failed") from None
        txid = blocks.txid_hex(tx)
        self._check_structure(tx)
        if txid in self._mempool:
            raise _Reject("txn-already-in-mempool")
        if txid in self._tx_index:
            raise _Reject("txn-already-known")
        weight = blocks.tx_weight(tx)
        if weight > MAX_STANDARD_TX_WEIGHT:
            raise _Reject("tx-size")
        tip_height = len(self._active) - 1
        self._check_final(tx, tip_height)

        prevouts = tuple(_outpoint(txin) for txin in tx.vin)
        spent: list[SpentOutput] = []
        parents: set[str] = set()
        conflicts: set[str] = set()
        for op in prevouts:
            spender = self._spenders.get(op)
            if spender is not None:
                conflicts.add(spender)
            utxo = self._utxos.get(op)
            if utxo is not None:
                if utxo.coinbase and tip_height + 1 - utxo.height < blocks.COINBASE_MATURITY:
                    raise _Reject(
                        "bad-txns-premature-spend-of-coinbase",
                        f"tried to spend coinbase at depth {tip_height + 1 - utxo.height}",
                    )
                spent.append(SpentOutput(utxo.script_pubkey, utxo.amount_sat))
                continue
            parent = self._mempool_txs.get(op[0])
            if parent is None or op[1] >= len(parent.vout):
                raise _Reject("bad-txns-inputs-missingorspent")
            out = parent.vout[op[1]]
            parents.add(op[0])
            spent.append(SpentOutput(bytes(out.scriptPubKey), int(out.nValue)))
        self._check_sequence_locks(tx, prevouts, tip_height)

        value_in = sum(s.amount_sat for s in spent)
        value_out = sum(int(out.nValue) for out in tx.vout)
        if value_in < value_out:
            raise _Reject(
                "bad-txns-in-belowout", f"bad-txns-in-belowout, value in ({value_in}) < out"
            )
        fee = value_in - value_out
        vsize = (weight + 3) // 4
        if fee < vsize * MIN_RELAY_SAT_PER_VB:
            raise _Reject("min relay fee not met", f"min relay fee not met, {fee} < {vsize}")

        evict = self._replacement_evictions(txid, prevouts, conflicts, parents, fee, vsize)

        try:
            self._verifier.verify_transaction(raw_tx, spent)
        except VerificationFailed as exc:
            raise _Reject(
                "mandatory-script-verify-flag-failed",
                f"mandatory-script-verify-flag-failed ({exc.message})",
            ) from None

        entry = MempoolTx(
            txid=txid,
            raw=bytes(raw_tx),
            fee_sat=fee,
            vsize=vsize,
            weight=weight,
            parents=frozenset(parents),
            prevouts=prevouts,
            time=int(self._clock()),
        )
        return _Candidate(entry=entry, tx=tx, evict=evict)

    @staticmethod
    def _check_structure(tx: CTransaction) -> None:
        if not tx.vin:
            raise _Reject("bad-txns-vin-empty")
        if not tx.vout:
            raise _Reject("bad-txns-vout-empty")
        if tx.is_coinbase():
            raise _Reject("coinbase")
        total = 0
        for out in tx.vout:
            if out.nValue < 0:
                raise _Reject("bad-txns-vout-negative")
            if out.nValue > MAX_MONEY:
                raise _Reject("bad-txns-vout-toolarge")
            total += out.nValue
            if total > MAX_MONEY:
                raise _Reject("bad-txns-txouttotal-toolarge")
        prevouts = [_outpoint(txin) for txin in tx.vin]
        if len(set(prevouts)) != len(prevouts):
            raise _Reject("bad-txns-inputs-duplicate")
        if any(txin.prevout.is_null() for txin in tx.vin):
            raise _Reject("bad-txns-prevout-null")

    def _check_final(self, tx: CTransaction, tip_height: int) -> None:
        """IsFinalTx for the next block (height tip+1, lock time against the tip's MTP)."""
        lock_time = int(tx.nLockTime)
        if lock_time == 0 or all(txin.nSequence == SEQUENCE_FINAL for txin in tx.vin):
            return
        if lock_time < LOCKTIME_THRESHOLD:
            final = lock_time < tip_height + 1
        else:
            final = lock_time < blocks.median_time_past(
                self._kernel.ancestor_times(self._active[-1])
            )
        if not final:
            raise _Reject("non-final")

    def _check_sequence_locks(
        self, tx: CTransaction, prevouts: tuple[Outpoint, ...], tip_height: int
    ) -> None:
        """BIP68 height locks; time-based relative locks are refused (never used by us)."""
        if tx.nVersion < 2:
            return
        for txin, op in zip(tx.vin, prevouts, strict=True):
            sequence = int(txin.nSequence)
            if sequence & SEQUENCE_DISABLE_FLAG:
                continue
            if sequence & SEQUENCE_TYPE_FLAG:
                raise _Reject("non-BIP68-final")
            utxo = self._utxos.get(op)
            coin_height = utxo.height if utxo is not None else tip_height + 1
            if coin_height + (sequence & SEQUENCE_MASK) - 1 >= tip_height + 1:
                raise _Reject("non-BIP68-final")

    def _ancestors(self, parents: Iterable[str]) -> set[str]:
        result: set[str] = set()
        stack = list(parents)
        while stack:
            current = stack.pop()
            if current not in result:
                result.add(current)
                stack.extend(self._mempool[current].parents)
        return result

    def _descendants(self, roots: Iterable[str]) -> set[str]:
        result = set(roots)
        changed = True
        while changed:
            changed = False
            for txid, entry in self._mempool.items():
                if txid not in result and entry.parents & result:
                    result.add(txid)
                    changed = True
        return result

    def _replacement_evictions(
        self,
        txid: str,
        prevouts: tuple[Outpoint, ...],
        conflicts: set[str],
        parents: set[str],
        fee: int,
        vsize: int,
    ) -> frozenset[str]:
        """Core 29's checks for a transaction spending outputs that mempool txs already spend.

        In Core's order (PreChecks, then ReplacementChecks); no BIP125 opt-in is needed.
        """
        if not conflicts:
            return frozenset()
        spent_conflicts = sorted(self._ancestors(parents) & conflicts)
        if spent_conflicts:
            _refuse(
                "bad-txns-spends-conflicting-tx",
                f"{txid} spends conflicting transaction {spent_conflicts[0]}",
            )
        self._check_pays_more_than_conflicts(txid, conflicts, fee, vsize)
        evict = self._entries_for_conflicts(txid, conflicts)
        self._check_no_new_unconfirmed(txid, prevouts, evict)
        _check_pays_for_rbf(txid, sum(self._mempool[t].fee_sat for t in evict), fee, vsize)
        return frozenset(evict)

    def _check_pays_more_than_conflicts(
        self, txid: str, conflicts: set[str], fee: int, vsize: int
    ) -> None:
        """Rule 6: a higher feerate (Core's sat/kvB, truncated) than each direct conflict."""
        new_rate = _sat_per_kvb(fee, vsize)
        for conflict in sorted(conflicts):
            original = self._mempool[conflict]
            old_rate = _sat_per_kvb(original.fee_sat, original.vsize)
            if new_rate <= old_rate:
                _refuse(
                    "insufficient fee",
                    f"rejecting replacement {txid}; new feerate {_format_feerate(new_rate)} "
                    f"<= old feerate {_format_feerate(old_rate)}",
                )

    def _entries_for_conflicts(self, txid: str, conflicts: set[str]) -> set[str]:
        """Rule 5: the direct conflicts and their descendants, at most 100 (counted as Core
        does, conservatively, as the sum of each conflict's count with descendants)."""
        count = 0
        evict: set[str] = set()
        for conflict in sorted(conflicts):
            with_descendants = self._descendants([conflict])
            count += len(with_descendants)
            if count > MAX_REPLACEMENT_CANDIDATES:
                _refuse(
                    "too many potential replacements",
                    f"rejecting replacement {txid}; too many potential replacements "
                    f"({count} > {MAX_REPLACEMENT_CANDIDATES})",
                )
            evict |= with_descendants
        return evict

    def _check_no_new_unconfirmed(
        self, txid: str, prevouts: tuple[Outpoint, ...], evict: set[str]
    ) -> None:
        """Rule 2: unconfirmed inputs only from transactions an evicted one already spent."""
        parents_of_conflicts = {op[0] for t in evict for op in self._mempool[t].prevouts}
        for index, (parent, _) in enumerate(prevouts):
            if parent not in parents_of_conflicts and parent in self._mempool:
                _refuse(
                    "replacement-adds-unconfirmed",
                    f"replacement {txid} adds unconfirmed input, idx {index}",
                )

    def _admit(self, candidate: _Candidate) -> None:
        for txid in candidate.evict:
            log.info("embedded mempool: %s replaced by %s", txid, candidate.entry.txid)
        self._remove(candidate.evict)
        entry = candidate.entry
        self._mempool[entry.txid] = entry
        self._mempool_txs[entry.txid] = candidate.tx
        for op in entry.prevouts:
            self._spenders[op] = entry.txid
        for listener in self._mempool_listeners:
            try:
                listener(entry.txid)
            except Exception:  # a listener's bug must not refuse a valid transaction
                log.exception("mempool listener failed")

    def _remove(self, txids: Iterable[str]) -> None:
        for txid in txids:
            entry = self._mempool.pop(txid, None)
            self._mempool_txs.pop(txid, None)
            if entry is None:
                continue
            for op in entry.prevouts:
                if self._spenders.get(op) == txid:
                    del self._spenders[op]

    def _refresh_mempool(self, first: list[bytes]) -> None:
        """Re-validate ``first`` then the current mempool against the current chain view."""
        previous = [entry.raw for entry in self._mempool.values()]
        self._mempool.clear()
        self._mempool_txs.clear()
        self._spenders.clear()
        for raw in _unique(first + previous):
            try:
                self._admit(self._check(raw))
            except _Reject as rej:
                if rej.reason not in ("txn-already-known", "txn-already-in-mempool"):
                    log.info("embedded mempool dropped a tx on re-validation: %s", rej.reason)
        self._persist_mempool()

    def _persist_mempool(self) -> None:
        path = self._dir / MEMPOOL_FILE
        tmp = path.with_suffix(".json.tmp")
        payload = {"version": 1, "txs": [entry.raw.hex() for entry in self._mempool.values()]}
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)

    def _load_mempool_file(self) -> list[bytes]:
        path = self._dir / MEMPOOL_FILE
        if not path.exists():
            return []
        try:
            payload: Any = json.loads(path.read_text())
            return [bytes.fromhex(h) for h in payload["txs"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable %s", path)
            return []


def _refuse(reason: str, detail: str) -> None:
    """Raise Core's state: its reject reason, and ``reason, detail`` as the message."""
    raise _Reject(reason, f"{reason}, {detail}")


def _check_pays_for_rbf(txid: str, evicted_fees: int, fee: int, vsize: int) -> None:
    """Rules 3 and 4: at least the evicted fees, plus the replacement's own relay."""
    if fee < evicted_fees:
        _refuse(
            "insufficient fee",
            f"rejecting replacement {txid}, less fees than conflicting txs; "
            f"{_format_money(fee)} < {_format_money(evicted_fees)}",
        )
    additional = fee - evicted_fees
    relay = -(-INCREMENTAL_RELAY_SAT_PER_KVB * vsize // 1000)
    if additional < relay:
        _refuse(
            "insufficient fee",
            f"rejecting replacement {txid}, not enough additional fees to relay; "
            f"{_format_money(additional)} < {_format_money(relay)}",
        )


def _sat_per_kvb(fee: int, vsize: int) -> int:
    """Core's CFeeRate(fee, size): satoshis per 1000 vB, truncated."""
    return fee * 1000 // vsize


def _format_feerate(sat_per_kvb: int) -> str:
    """CFeeRate::ToString()."""
    return f"{sat_per_kvb // COIN}.{sat_per_kvb % COIN:08d} BTC/kvB"


def _format_money(sats: int) -> str:
    """Core's FormatMoney: BTC with trailing zeros trimmed to two decimals."""
    whole, fraction = divmod(abs(sats), COIN)
    digits = f"{fraction:08d}".rstrip("0").ljust(2, "0")
    return f"{'-' if sats < 0 else ''}{whole}.{digits}"


def _outpoint(txin: Any) -> Outpoint:
    return (str(b2lx(txin.prevout.hash)), int(txin.prevout.n))


def _txid_or_empty(raw_tx: bytes) -> str:
    try:
        return blocks.txid_hex(CTransaction.deserialize(raw_tx))
    except Exception:
        return ""


def _unique(raws: list[bytes]) -> Iterator[bytes]:
    seen: set[bytes] = set()
    for raw in raws:
        if raw not in seen:
            seen.add(raw)
            yield raw
