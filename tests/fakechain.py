"""An in-memory ChainBackend for service tests whose subject is not the chain.

It keeps what the services rely on: an active chain of real serialized blocks (regtest
genesis, coinbases paying an address, BIP141 commitments) that the scanner parses, a UTXO
view with coinbase maturity, and a mempool that refuses double spends, missing inputs,
inflation and fees below the relay floor, with Bitcoin Core's reject reasons. Every input
script is checked by libbitcoinkernel (KernelScriptVerifier, which needs no chainstate), so a
bad signature fails here as it would on a node.

It does not do reorgs, BIP125 replacement, lock times or persistence across processes: tests
about those use the real embedded chain (``@pytest.mark.kernel``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bitcoin.core import CBlock, CoreRegTestParams, CTransaction, b2lx
from bitcoin.core.serialize import SerializationError, SerializationTruncationError

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.devchain import blocks
from walletsvc.domain.errors import ChainRejected, NotFound, VerificationFailed
from walletsvc.domain.network import Network
from walletsvc.domain.ports import AcceptResult, BlockRef, SpentOutput

Outpoint = tuple[str, int]
MIN_RELAY_SAT_PER_VB = 1

_verifier: KernelScriptVerifier | None = None


def _shared_verifier() -> KernelScriptVerifier:
    global _verifier
    if _verifier is None:
        _verifier = KernelScriptVerifier()
    return _verifier


@dataclass(frozen=True)
class _Coin:
    script_pubkey: bytes
    amount_sat: int
    height: int
    coinbase: bool


@dataclass(frozen=True)
class _Pending:
    tx: CTransaction
    raw: bytes
    fee_sat: int


class FakeChain:
    """A regtest chain in memory. Thread-safe: every public method holds one lock."""

    def __init__(self, *, fee_rate_sat_per_vb: int = 2) -> None:
        self._fee_rate = fee_rate_sat_per_vb
        self._lock = threading.RLock()
        genesis = CoreRegTestParams.GENESIS_BLOCK
        self._active: list[str] = [blocks.block_hash_hex(genesis)]
        self._raw_blocks: dict[str, bytes] = {self._active[0]: bytes(genesis.serialize())}
        self._times: list[int] = [int(genesis.nTime)]
        self._utxos: dict[Outpoint, _Coin] = {}
        self._confirmed: dict[str, tuple[bytes, int]] = {}  # txid -> (raw, height)
        self._mempool: dict[str, _Pending] = {}  # insertion order is topological
        self._spenders: dict[Outpoint, str] = {}
        self.closed = False

    # -- ChainBackend --------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return Network.REGTEST

    def tip(self) -> BlockRef:
        with self._lock:
            return BlockRef(height=len(self._active) - 1, hash=self._active[-1])

    def block_hash(self, height: int) -> str | None:
        with self._lock:
            return self._active[height] if 0 <= height < len(self._active) else None

    def block_bytes(self, block_hash: str) -> bytes:
        with self._lock:
            raw = self._raw_blocks.get(block_hash)
        if raw is None:
            raise NotFound(f"block {block_hash} not found", field="block_hash")
        return raw

    def broadcast(self, raw_tx: bytes, *, max_fee_rate_sat_per_vb: int | None = None) -> str:
        with self._lock:
            txid = _txid_of_raw(raw_tx)
            if txid and (txid in self._mempool or txid in self._confirmed):
                return txid  # idempotent, as the port promises
            pending = self._check(raw_tx)
            self._admit(pending)
            return _txid(pending.tx)

    def test_accept(self, raw_tx: bytes) -> AcceptResult:
        with self._lock:
            try:
                pending = self._check(raw_tx)
            except ChainRejected as exc:
                return AcceptResult(txid=_txid_of_raw(raw_tx), allowed=False, reason=exc.reason)
            return AcceptResult(txid=_txid(pending.tx), allowed=True)

    def mempool_txids(self) -> set[str]:
        with self._lock:
            return set(self._mempool)

    def fee_rate_sat_per_vb(self, target_blocks: int) -> int:
        return self._fee_rate

    def close(self) -> None:
        self.closed = True  # nothing to release; the chain outlives runtimes in one test

    # -- what tests drive ------------------------------------------------------------------

    def mine(self, n: int, to_script_pubkey: bytes | None = None) -> list[str]:
        """Mine ``n`` blocks; the first takes the whole mempool. Returns their hashes."""
        script = blocks.BURN_SCRIPT_PUBKEY if to_script_pubkey is None else to_script_pubkey
        mined: list[str] = []
        with self._lock:
            for _ in range(n):
                pending = list(self._mempool.values())
                height = len(self._active)
                block = blocks.assemble_block(
                    self._active[-1],
                    height,
                    [p.tx for p in pending],
                    sum(p.fee_sat for p in pending),
                    coinbase_script_pubkey=script,
                    timestamp=blocks.next_block_time(
                        int(time.time()), blocks.median_time_past(self._times)
                    ),
                )
                self._connect(block, height)
                mined.append(self._active[-1])
        return mined

    def get_transaction(self, txid: str) -> bytes | None:
        with self._lock:
            if txid in self._mempool:
                return self._mempool[txid].raw
            confirmed = self._confirmed.get(txid)
            return confirmed[0] if confirmed else None

    def confirmations(self, txid: str) -> int:
        with self._lock:
            confirmed = self._confirmed.get(txid)
            return 0 if confirmed is None else len(self._active) - confirmed[1]

    # -- internals -----------------------------------------------------------------------

    def _connect(self, block: CBlock, height: int) -> None:
        block_hash = blocks.block_hash_hex(block)
        self._active.append(block_hash)
        self._raw_blocks[block_hash] = bytes(block.serialize())
        self._times.append(int(block.nTime))
        for index, tx in enumerate(block.vtx):
            txid = _txid(tx)
            for txin in tx.vin if index else ():
                op = _outpoint(txin)
                self._utxos.pop(op, None)
                self._spenders.pop(op, None)
            for vout, out in enumerate(tx.vout):
                coin = _Coin(bytes(out.scriptPubKey), int(out.nValue), height, index == 0)
                self._utxos[(txid, vout)] = coin
            self._confirmed[txid] = (bytes(tx.serialize()), height)
            self._mempool.pop(txid, None)

    def _admit(self, pending: _Pending) -> None:
        txid = _txid(pending.tx)
        self._mempool[txid] = pending
        for txin in pending.tx.vin:
            self._spenders[_outpoint(txin)] = txid

    def _check(self, raw_tx: bytes) -> _Pending:
        try:
            tx = CTransaction.deserialize(raw_tx)
        except (SerializationError, SerializationTruncationError, ValueError, AssertionError):
            raise _reject("TX decode failed") from None
        if not tx.vin:
            raise _reject("bad-txns-vin-empty")
        if not tx.vout:
            raise _reject("bad-txns-vout-empty")
        if tx.is_coinbase():
            raise _reject("coinbase")
        txid = _txid(tx)
        if txid in self._mempool:
            raise _reject("txn-already-in-mempool")
        if txid in self._confirmed:
            raise _reject("txn-already-known")
        next_height = len(self._active)
        spent: list[SpentOutput] = []
        for txin in tx.vin:
            op = _outpoint(txin)
            if op in self._spenders:
                raise _reject("txn-mempool-conflict")
            spent.append(self._spendable(op, next_height))
        value_in = sum(s.amount_sat for s in spent)
        value_out = sum(int(out.nValue) for out in tx.vout)
        if value_in < value_out:
            raise _reject("bad-txns-in-belowout")
        fee = value_in - value_out
        if fee < blocks.tx_vsize(tx) * MIN_RELAY_SAT_PER_VB:
            raise _reject("min relay fee not met")
        try:
            _shared_verifier().verify_transaction(raw_tx, spent)
        except VerificationFailed as exc:
            raise _reject("mandatory-script-verify-flag-failed", exc.message) from None
        return _Pending(tx=tx, raw=bytes(raw_tx), fee_sat=fee)

    def _spendable(self, op: Outpoint, next_height: int) -> SpentOutput:
        coin = self._utxos.get(op)
        if coin is not None:
            if coin.coinbase and next_height - coin.height < blocks.COINBASE_MATURITY:
                raise _reject("bad-txns-premature-spend-of-coinbase")
            return SpentOutput(coin.script_pubkey, coin.amount_sat)
        parent = self._mempool.get(op[0])
        if parent is None or op[1] >= len(parent.tx.vout):
            raise _reject("bad-txns-inputs-missingorspent")
        out = parent.tx.vout[op[1]]
        return SpentOutput(bytes(out.scriptPubKey), int(out.nValue))


def _reject(reason: str, detail: str = "") -> ChainRejected:
    return ChainRejected(f"{reason} ({detail})" if detail else reason, reason=reason)


def _txid(tx: CTransaction) -> str:
    return str(b2lx(tx.GetTxid()))


def _txid_of_raw(raw_tx: bytes) -> str:
    try:
        return _txid(CTransaction.deserialize(raw_tx))
    except (SerializationError, SerializationTruncationError, ValueError, AssertionError):
        return ""


def _outpoint(txin: object) -> Outpoint:
    prevout = txin.prevout  # type: ignore[attr-defined]
    return (str(b2lx(prevout.hash)), int(prevout.n))
