"""What the RPC backend checks and refuses, against a Core-shaped stub on loopback: a syncing,
pruned, old or foreign node, no fee estimate, and a testmempoolaccept refusal before a send."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from walletsvc.chain.factory import open_chain
from walletsvc.chain.rpc import (
    CORE_GENESIS_HASHES,
    BitcoinRpcBackend,
    FeeEstimateUnavailable,
    NetworkMismatch,
    NodeNotSynced,
    NodePruned,
    NodeUnsupported,
    RpcError,
    TestnetVariant,
    max_feerate_btc_per_kvb,
)
from walletsvc.config import Settings
from walletsvc.domain.errors import DependencyUnavailable
from walletsvc.domain.network import Network

from .core_stub import TIP_HASH, TXID, CoreStub, running

NODE_CHECK = ["getblockchaininfo", "getblockhash", "getnetworkinfo"]
RAW_TX = bytes.fromhex("02000000000100000000")  # never decoded by the stub


@pytest.fixture
def stub() -> CoreStub:
    return CoreStub()


@pytest.fixture
def url(stub: CoreStub) -> Iterator[str]:
    with running(stub) as served:
        yield served


def backend_for(url: str, network: Network = Network.REGTEST, **kwargs: Any) -> BitcoinRpcBackend:
    return BitcoinRpcBackend(url, network, retries=0, **kwargs)


def test_a_healthy_node_is_checked_once(stub: CoreStub, url: str) -> None:
    backend = backend_for(url)
    assert backend.tip().hash == TIP_HASH
    assert backend.mempool_txids() == set()
    assert backend.tip().height == 7
    assert stub.methods() == [*NODE_CHECK, "getrawmempool", "getblockchaininfo"]
    assert stub.params("getblockhash") == [[0]]
    backend.close()


def test_a_node_in_initial_block_download_is_refused(stub: CoreStub, url: str) -> None:
    stub.initialblockdownload, stub.blocks, stub.headers = True, 120, 900_000
    backend = backend_for(url)
    with pytest.raises(NodeNotSynced, match=r"initial block download \(blocks 120, headers 900000"):
        backend.mempool_txids()
    assert "getrawmempool" not in stub.methods()
    stub.initialblockdownload = False  # done with IBD but still behind its headers
    with pytest.raises(NodeNotSynced, match=r"validated 120 blocks of 900000 headers"):
        backend.fee_rate_sat_per_vb(6)
    assert "estimatesmartfee" not in stub.methods()
    stub.blocks = stub.headers
    assert backend.fee_rate_sat_per_vb(6) == 13
    backend.close()


def test_tip_refuses_a_node_that_falls_behind_after_the_check(stub: CoreStub, url: str) -> None:
    backend = backend_for(url)
    assert backend.tip().height == 7
    stub.headers = 9
    with pytest.raises(NodeNotSynced, match="7 blocks of 9 headers"):
        backend.tip()
    backend.close()


def test_a_node_pruned_above_the_scan_start_is_refused(stub: CoreStub, url: str) -> None:
    stub.pruneheight = 5_000
    with pytest.raises(NodePruned, match=r"pruned up to height 5000.*SCAN_START_HEIGHT=4999"):
        backend_for(url, scan_start_height=4_999).tip()
    # Pruned, but every block from the wallet's birth height on is still stored.
    kept = backend_for(url, scan_start_height=5_000)
    assert kept.tip().height == 7

    stub.pruned_blocks.add("77" * 32)  # pruned later, under a running service
    with pytest.raises(NodePruned, match=r"pruned block 7777.*pruned data"):
        kept.block_bytes("77" * 32)
    kept.close()


def test_an_old_node_is_refused(stub: CoreStub, url: str) -> None:
    stub.version = 270100
    with pytest.raises(NodeUnsupported, match=r"version 270100 \(/Satoshi:27.1.0/\).*280000"):
        backend_for(url).tip()
    stub.version = 290000
    assert backend_for(url).tip().height == 7


@pytest.mark.parametrize(
    ("chain", "variant", "accepted"),
    [
        ("testnet4", "testnet4", True),
        ("test", "testnet3", True),
        ("test", "testnet4", False),
        ("testnet4", "testnet3", False),
    ],
)
def test_testnet4_and_testnet3_are_told_apart(
    stub: CoreStub, url: str, chain: str, variant: TestnetVariant, accepted: bool
) -> None:
    stub.chain = chain
    backend = backend_for(url, Network.TESTNET, testnet_variant=variant)
    if accepted:
        assert backend.tip().height == 7
    else:
        with pytest.raises(NetworkMismatch, match="WALLETSVC_TESTNET_VARIANT"):
            backend.tip()
    backend.close()


def test_the_genesis_block_decides_not_the_chain_name(stub: CoreStub, url: str) -> None:
    # A node that calls itself testnet4 but whose block 0 is testnet3's genesis.
    stub.chain, stub.genesis = "testnet4", CORE_GENESIS_HASHES["test"]
    with pytest.raises(NetworkMismatch, match="genesis block 000000000933ea01"):
        backend_for(url, Network.TESTNET).tip()
    stub.chain, stub.genesis = "signet", None
    assert backend_for(url, Network.SIGNET).tip().height == 7
    with pytest.raises(NetworkMismatch, match="chain 'signet', expected 'main'"):
        backend_for(url, Network.MAINNET).tip()


def test_estimate_mode_is_sent_and_the_rate_rounded_up(stub: CoreStub, url: str) -> None:
    backend = backend_for(url, fee_floor_sat_per_vb=2)
    assert backend.fee_rate_sat_per_vb(6) == 13  # 12.341 sat/vB
    stub.feerate = Decimal("0.00001000")
    assert backend.fee_rate_sat_per_vb(2) == 2  # 1 sat/vB, below the floor
    assert backend.fee_rate_sat_per_vb(2000) == 2
    economical = backend_for(url, estimate_mode="economical")
    economical.fee_rate_sat_per_vb(3)
    assert stub.params("estimatesmartfee") == [
        [6, "conservative"],
        [2, "conservative"],
        [1008, "conservative"],
        [3, "economical"],
    ]


def test_no_fee_estimate_is_refused_without_a_fallback(stub: CoreStub, url: str) -> None:
    stub.feerate = None
    backend = backend_for(url)
    with pytest.raises(FeeEstimateUnavailable) as info:
        backend.fee_rate_sat_per_vb(6)
    assert isinstance(info.value, DependencyUnavailable)
    assert "Insufficient data or no feerate found" in info.value.message
    assert "WALLETSVC_FALLBACK_FEE_RATE_SAT_PER_VB is not set" in info.value.message


def test_no_fee_estimate_uses_the_configured_fallback_with_a_warning(
    stub: CoreStub, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    stub.feerate = None
    backend = backend_for(url, fallback_fee_rate_sat_per_vb=25, fee_floor_sat_per_vb=2)
    with caplog.at_level(logging.WARNING, logger="walletsvc.chain.rpc"):
        assert backend.fee_rate_sat_per_vb(6) == 25
    (record,) = [r for r in caplog.records if r.name == "walletsvc.chain.rpc"]
    assert record.levelno == logging.WARNING
    assert "WALLETSVC_FALLBACK_FEE_RATE_SAT_PER_VB=25" in record.getMessage()


def test_broadcast_tests_first_with_an_explicit_maxfeerate(stub: CoreStub, url: str) -> None:
    backend = backend_for(url, max_fee_rate_sat_per_vb=200)
    assert backend.broadcast(RAW_TX) == TXID
    assert stub.methods() == [*NODE_CHECK, "testmempoolaccept", "sendrawtransaction"]
    # 200 sat/vB with 5% head-room = 210,000 sat/kvB, not Core's 0.10 BTC/kvB default.
    assert stub.params("testmempoolaccept") == [[[RAW_TX.hex()], "0.00210000"]]
    assert stub.params("sendrawtransaction") == [[RAW_TX.hex(), "0.00210000"]]
    backend.close()


@pytest.mark.parametrize(
    ("reason", "rpc_code"),
    [
        ("max-fee-exceeded", -25),
        ("missing-inputs", -25),
        ("insufficient fee", -26),
        ("mandatory-script-verify-flag-failed", -26),
    ],
)
def test_a_testmempoolaccept_refusal_sends_nothing(
    stub: CoreStub, url: str, reason: str, rpc_code: int
) -> None:
    stub.reject_reason = reason
    backend = backend_for(url)
    with pytest.raises(RpcError) as info:
        backend.broadcast(RAW_TX)
    expected = "bad-txns-inputs-missingorspent" if reason == "missing-inputs" else reason
    assert (info.value.reason, info.value.rpc_code) == (expected, rpc_code)
    assert f"({reason}, details from Core 29); not broadcast" in info.value.message
    assert "sendrawtransaction" not in stub.methods()
    backend.close()


def test_a_transaction_the_node_already_has_is_still_sent(stub: CoreStub, url: str) -> None:
    stub.reject_reason = "txn-already-in-mempool"
    backend = backend_for(url)
    assert backend.broadcast(RAW_TX) == TXID  # Core re-announces it and answers its txid
    assert stub.methods()[-1] == "sendrawtransaction"
    backend.close()


def test_the_node_is_checked_again_after_it_restarts(tmp_path: Path) -> None:
    # Core writes a new cookie on every start; the 401 that follows is our sign of a restart.
    stub = CoreStub(password="first start")
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:first start")
    with running(stub) as url:
        backend = BitcoinRpcBackend(url, Network.REGTEST, cookie_file=cookie, retries=0)
        backend.mempool_txids()
        backend.mempool_txids()
        assert stub.methods().count("getnetworkinfo") == 1

        stub.password, stub.version = "second start", 270000  # downgraded while it was down
        cookie.write_text("__cookie__:second start")
        with pytest.raises(NodeUnsupported):
            backend.broadcast(RAW_TX)  # the restart shows at testmempoolaccept
        assert stub.methods()[-4:] == ["testmempoolaccept", *NODE_CHECK]
        assert "sendrawtransaction" not in stub.methods()
        backend.close()


def test_factory_passes_the_settings(stub: CoreStub, url: str, tmp_path: Path) -> None:
    stub.feerate = None
    settings = Settings(
        data_dir=tmp_path,
        chain_backend="rpc",
        rpc_url=url,
        fee_ceiling_sat_per_vb=50,
        fee_estimate_mode="economical",
        fallback_fee_rate_sat_per_vb=7,
        scan_start_height=3,
    )
    backend = open_chain(settings)
    assert isinstance(backend, BitcoinRpcBackend)
    assert backend.fee_rate_sat_per_vb(6) == 7
    assert stub.params("estimatesmartfee") == [[6, "economical"]]
    backend.broadcast(RAW_TX)
    # The rotation sweep's minimum (10) is below the ceiling (50): 50 * 1.05 sat/vB.
    assert stub.params("sendrawtransaction") == [[RAW_TX.hex(), max_feerate_btc_per_kvb(50)]]
    assert max_feerate_btc_per_kvb(50) == "0.00052500"
    stub.pruneheight = 4
    with pytest.raises(NodePruned, match="SCAN_START_HEIGHT=3"):
        open_chain(settings).tip()
    backend.close()
