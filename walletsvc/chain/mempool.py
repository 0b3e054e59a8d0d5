"""Bitcoin Core's mempool as a ``MempoolSource``: ZMQ pushes, RPC reads.

Pushes: a SUB socket on ``-zmqpubrawtx`` (topic ``rawtx``: the raw transaction) and/or
``-zmqpubsequence`` (topic ``sequence``: ``<32-byte txid>A<8-byte sequence>`` when a
transaction is added), read on one background thread, each txid handed to the listeners.
ZMQ drops messages when a subscriber falls behind and says nothing when the node restarts, so
the watcher also polls ``gettxspendingprevout`` (``mempool_spenders``) over our unspent
coins; a push only makes it sooner.

Reads: ``getmempoolentry`` (fee, descendant fees, vsize) and ``getrawtransaction`` for the
bytes. Shapes as in Core's ``src/rpc/mempool.cpp`` help: ``fees.base`` and
``fees.descendant`` in BTC, ``vsize`` in virtual bytes; RPC_INVALID_ADDRESS_OR_KEY (-5) when
the transaction is not (or no longer) in the mempool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import zmq
from bitcoin.core import CTransaction, b2lx

from walletsvc.chain.rpc import BitcoinRpcBackend, RpcError
from walletsvc.domain.money import COIN
from walletsvc.domain.ports import MempoolEntry, MempoolListener

log = logging.getLogger(__name__)
RPC_INVALID_ADDRESS_OR_KEY = -5
SEQUENCE_ADDED = b"A"
_RECEIVE_TIMEOUT_MS = 250  # how often the ZMQ thread looks at its stop flag
_OUTPOINTS_PER_CALL = 1_000  # gettxspendingprevout request size


def _sat(btc: Any) -> int:
    return int((Decimal(str(btc)) * COIN).to_integral_value())


def txid_of_raw(raw: bytes) -> str:
    return str(b2lx(CTransaction.deserialize(raw).GetTxid()))


def txid_of_zmq(topic: bytes, body: bytes) -> str | None:
    """The txid a ``rawtx`` or ``sequence`` (added) message announces, else None."""
    if topic == b"rawtx":
        return txid_of_raw(body)
    if topic == b"sequence" and len(body) >= 33 and body[32:33] == SEQUENCE_ADDED:
        # Core writes the hash byte-reversed (display order), as in its zmq_sub.py example.
        return body[:32].hex()
    return None


class CoreMempoolSource:
    def __init__(
        self, rpc: BitcoinRpcBackend, *, rawtx_url: str = "", sequence_url: str = ""
    ) -> None:
        self._rpc = rpc
        self._urls = [(u, t) for u, t in ((rawtx_url, b"rawtx"), (sequence_url, b"sequence")) if u]
        self._listeners: list[MempoolListener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"CoreMempoolSource(zmq={[u for u, _ in self._urls]})"

    def subscribe(self, listener: MempoolListener) -> None:
        self._listeners.append(listener)
        if self._urls and self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="zmq-mempool", daemon=True)
            self._thread.start()

    def mempool_txids(self) -> set[str]:
        return self._rpc.mempool_txids()

    def mempool_spenders(self, outpoints: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """gettxspendingprevout (Core 25+): ``spendingtxid`` is present only for an outpoint
        a mempool transaction spends."""
        found: dict[tuple[str, int], str] = {}
        for start in range(0, len(outpoints), _OUTPOINTS_PER_CALL):
            chunk = outpoints[start : start + _OUTPOINTS_PER_CALL]
            asked = [{"txid": txid, "vout": vout} for txid, vout in chunk]
            for row in self._rpc.call("gettxspendingprevout", asked):
                if row.get("spendingtxid"):
                    found[(str(row["txid"]), int(row["vout"]))] = str(row["spendingtxid"])
        return found

    def mempool_transaction(self, txid: str) -> bytes | None:
        try:
            return bytes.fromhex(str(self._rpc.call("getrawtransaction", txid)))
        except RpcError as exc:
            if exc.rpc_code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise

    def mempool_entry(self, txid: str) -> MempoolEntry | None:
        try:
            entry = self._rpc.call("getmempoolentry", txid)
            raw = bytes.fromhex(str(self._rpc.call("getrawtransaction", txid)))
        except RpcError as exc:
            if exc.rpc_code == RPC_INVALID_ADDRESS_OR_KEY:
                return None  # mined or evicted in the meantime
            raise
        fees = entry["fees"]
        return MempoolEntry(
            txid=txid,
            raw=raw,
            fee_sat=_sat(fees["base"]),
            vsize=int(entry["vsize"]),
            descendant_fees_sat=_sat(fees["descendant"]),
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.RCVTIMEO, _RECEIVE_TIMEOUT_MS)
        socket.setsockopt(zmq.RCVHWM, 0)  # Core's advice: do not drop on our side
        for url, topic in self._urls:
            socket.connect(url)
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        try:
            while not self._stop.is_set():
                try:
                    parts = socket.recv_multipart()
                except zmq.Again:
                    continue
                self._deliver(parts)
        finally:
            socket.close(linger=0)

    def _deliver(self, parts: list[bytes]) -> None:
        if len(parts) < 2:
            return
        try:
            txid = txid_of_zmq(parts[0], parts[1])
        except Exception:  # a garbled message must not stop the thread; the poll catches up
            log.warning("unreadable ZMQ %r message ignored", parts[0][:16])
            return
        if txid is not None:
            for listener in self._listeners:
                listener(txid)
