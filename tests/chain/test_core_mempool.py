"""Bitcoin Core's mempool feed: reads shaped as Core's mempool.cpp help prints them, and its
ZMQ ``rawtx``/``sequence`` notifications from a real ZMQ publisher on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
import zmq
from bitcoin.core import CMutableTransaction, COutPoint, CScript, CTxIn, CTxOut, lx

from walletsvc.chain.mempool import CoreMempoolSource, txid_of_raw, txid_of_zmq
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.domain.network import Network

from .core_stub import CoreStub, running

PUBLISH_DEADLINE_S = 30.0  # generous: publishing repeats until the subscriber has it


def a_raw_tx(n: int = 0) -> bytes:
    tx = CMutableTransaction(
        [CTxIn(COutPoint(bytes([n + 1]) * 32, 0))],
        [CTxOut(10_000, CScript(b"\x00\x14" + b"\x22" * 20))],
    )
    return bytes(tx.serialize())


@pytest.fixture
def stub() -> CoreStub:
    return CoreStub()


@pytest.fixture
def rpc(stub: CoreStub) -> Iterator[BitcoinRpcBackend]:
    with running(stub) as url:
        backend = BitcoinRpcBackend(url, Network.REGTEST, retries=0)
        yield backend
        backend.close()


def test_a_mempool_entry_is_read_in_core_units(stub: CoreStub, rpc: BitcoinRpcBackend) -> None:
    raw = a_raw_tx()
    txid = txid_of_raw(raw)
    stub.mempool[txid] = (raw.hex(), Decimal("0.00001234"), Decimal("0.00005000"), 110)
    source = CoreMempoolSource(rpc)
    assert source.mempool_txids() == {txid}
    entry = source.mempool_entry(txid)
    assert entry is not None
    assert (entry.txid, entry.raw, entry.fee_sat, entry.vsize) == (txid, raw, 1_234, 110)
    assert entry.descendant_fees_sat == 5_000


def test_a_transaction_gone_from_the_mempool_has_no_entry(rpc: BitcoinRpcBackend) -> None:
    source = CoreMempoolSource(rpc)
    assert source.mempool_entry("ab" * 32) is None
    assert source.mempool_transaction("ab" * 32) is None


def test_the_poll_asks_which_mempool_transactions_spend_our_outpoints(
    stub: CoreStub, rpc: BitcoinRpcBackend
) -> None:
    raw = a_raw_tx(3)  # spends (04..04, 0)
    txid = txid_of_raw(raw)
    stub.mempool[txid] = (raw.hex(), Decimal("0.00001"), Decimal("0.00001"), 110)
    ours = [("04" * 32, 0), ("04" * 32, 1), ("05" * 32, 0)]
    assert CoreMempoolSource(rpc).mempool_spenders(ours) == {("04" * 32, 0): txid}
    (asked,) = stub.params("gettxspendingprevout")
    assert asked == [[{"txid": t, "vout": v} for t, v in ours]]
    assert CoreMempoolSource(rpc).mempool_transaction(txid) == raw


def test_zmq_messages_name_the_added_transaction() -> None:
    raw = a_raw_tx()
    txid = txid_of_raw(raw)
    assert txid_of_zmq(b"rawtx", raw) == txid
    reversed_hash = lx(txid)[::-1]  # Core's byte order: as displayed
    assert reversed_hash.hex() == txid
    assert txid_of_zmq(b"sequence", reversed_hash + b"A" + bytes(8)) == txid
    assert txid_of_zmq(b"sequence", reversed_hash + b"R" + bytes(8)) is None  # removed
    assert txid_of_zmq(b"sequence", reversed_hash + b"C") is None  # block connected
    assert txid_of_zmq(b"hashblock", bytes(32)) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("topic", ["rawtx", "sequence"])
def test_zmq_notifications_reach_the_listener(rpc: BitcoinRpcBackend, topic: str) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.bind(url)
    urls = {"rawtx_url": url} if topic == "rawtx" else {"sequence_url": url}
    source = CoreMempoolSource(rpc, **urls)
    heard: list[str] = []
    arrived = threading.Event()

    def listener(txid: str) -> None:
        heard.append(txid)
        arrived.set()

    source.subscribe(listener)
    raw = a_raw_tx(7)
    txid = txid_of_raw(raw)
    body = raw if topic == "rawtx" else bytes.fromhex(txid) + b"A" + bytes(8)
    try:
        # A ZMQ subscriber misses what is published before its subscription lands: publish
        # again until it hears (each wait ends early the moment it does).
        for _ in range(int(PUBLISH_DEADLINE_S / 0.1)):
            publisher.send_multipart([topic.encode(), body, (0).to_bytes(4, "little")])
            if arrived.wait(0.1):
                break
    finally:
        source.close()
        publisher.close(linger=0)
    assert heard and set(heard) == {txid}
