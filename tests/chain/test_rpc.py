"""The JSON-RPC backend against live HTTP servers on loopback: the embedded chain's Core-shaped
RPC server for behaviour, and a tiny scripted server for transport edge cases."""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bitcoin.core import CBlock, b2lx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from walletsvc.chain.factory import open_chain
from walletsvc.chain.rpc import (
    CORE_GENESIS_HASHES,
    BitcoinRpcBackend,
    FeeEstimateUnavailable,
    NetworkMismatch,
    RpcError,
    reject_reason,
)
from walletsvc.config import Settings
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.devchain.rpc_server import (
    RpcServerThread,
    embedded_rpc_endpoint,
    make_rpc_app,
    read_cookie,
    serve_embedded_rpc,
    write_cookie,
)
from walletsvc.devchain.service import open_dev_chain
from walletsvc.domain.address import script_to_address
from walletsvc.domain.errors import ChainRejected, DependencyUnavailable, InvalidInput, NotFound
from walletsvc.domain.network import Network

from .conftest import Prevout, TestKey, fund, spend, txid_of

pytestmark = pytest.mark.kernel

USER, PASSWORD = "rpcuser", "correct horse battery staple"


@pytest.fixture
def server(chain: EmbeddedChain) -> Iterator[RpcServerThread]:
    running = RpcServerThread(make_rpc_app(chain, user=USER, password=PASSWORD)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def backend(server: RpcServerThread) -> Iterator[BitcoinRpcBackend]:
    b = BitcoinRpcBackend(server.url, Network.REGTEST, user=USER, password=PASSWORD, retries=0)
    try:
        yield b
    finally:
        b.close()


def raw_rpc(
    server: RpcServerThread, body: Any, auth: tuple[str, str] = (USER, PASSWORD)
) -> httpx.Response:
    return httpx.post(server.url, json=body, auth=auth, timeout=10)


def pay(prevout: Prevout, to: TestKey, *, fee: int = 1_000, **kwargs: Any) -> bytes:
    return spend([prevout], [(to.script_pubkey, prevout.amount_sat - fee)], **kwargs)


def test_tip_and_blocks_match_the_chain(chain: EmbeddedChain, backend: BitcoinRpcBackend) -> None:
    chain.mine(5)
    assert backend.network is Network.REGTEST
    assert backend.tip() == chain.tip()
    for height in range(6):
        block_hash = backend.block_hash(height)
        assert block_hash == chain.block_hash(height)
        assert block_hash is not None
        assert backend.block_bytes(block_hash) == chain.block_bytes(block_hash)
    assert backend.block_hash(6) is None
    assert backend.block_hash(-1) is None
    with pytest.raises(NotFound):
        backend.block_bytes("11" * 32)


def test_broadcast_and_idempotent_rebroadcast(
    chain: EmbeddedChain,
    backend: BitcoinRpcBackend,
    server: RpcServerThread,
    alice: TestKey,
    bob: TestKey,
) -> None:
    (coin,) = fund(chain, alice)
    raw = pay(coin, bob)
    txid = txid_of(raw)
    assert backend.test_accept(raw).allowed
    assert backend.broadcast(raw) == txid
    assert backend.mempool_txids() == chain.mempool_txids() == {txid}
    assert backend.broadcast(raw) == txid  # already in the mempool

    chain.mine(1)
    # Core answers -27 for a confirmed tx; the backend turns it into the txid.
    reply = raw_rpc(
        server, {"jsonrpc": "1.0", "id": 1, "method": "sendrawtransaction", "params": [raw.hex()]}
    )
    assert reply.status_code == 500 and reply.json()["error"]["code"] == -27
    assert backend.broadcast(raw) == txid
    assert backend.mempool_txids() == set()


def test_refusals_carry_core_reasons(
    chain: EmbeddedChain, backend: BitcoinRpcBackend, alice: TestKey, bob: TestKey
) -> None:
    (coin,) = fund(chain, alice)
    cases = {
        "mandatory-script-verify-flag-failed": pay(coin, bob, sign_with=[bob]),
        "min relay fee not met": pay(coin, bob, fee=10),
        "bad-txns-inputs-missingorspent": pay(Prevout("cd" * 32, 1, 10_000, alice), bob),
        "bad-txns-in-belowout": pay(coin, bob, fee=-5),
    }
    for reason, raw in cases.items():
        result = backend.test_accept(raw)
        assert (result.allowed, result.reason, result.txid) == (False, reason, txid_of(raw))
        with pytest.raises(ChainRejected) as info:
            backend.broadcast(raw)
        assert info.value.reason == reason
        assert isinstance(info.value, RpcError)
        assert info.value.rpc_code == (-25 if reason.startswith("bad-txns-inputs") else -26)
    assert backend.test_accept(b"\x00garbage") == backend.test_accept(b"")
    assert backend.test_accept(b"").reason == "TX decode failed"
    assert backend.mempool_txids() == set()


def test_estimatesmartfee_is_converted_to_sat_per_vbyte(
    backend: BitcoinRpcBackend, server: RpcServerThread
) -> None:
    reply = raw_rpc(
        server, {"jsonrpc": "1.0", "id": 1, "method": "estimatesmartfee", "params": [6]}
    )
    assert '"feerate": 0.00003000' in reply.text  # Core prints BTC/kvB with 8 decimals
    assert backend.fee_rate_sat_per_vb(6) == 3  # the fixture chain's constant


def test_bad_credentials_are_refused(server: RpcServerThread) -> None:
    assert raw_rpc(server, {"method": "getblockcount"}, auth=(USER, "wrong")).status_code == 401
    bad = BitcoinRpcBackend(server.url, Network.REGTEST, user=USER, password="wrong", retries=0)
    with pytest.raises(DependencyUnavailable, match="401"):
        bad.tip()
    assert "wrong" not in repr(bad)
    bad.close()


def test_cookie_authentication(chain: EmbeddedChain, tmp_path: Path) -> None:
    user, password = write_cookie(tmp_path)
    cookie = tmp_path / ".cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
    assert cookie.read_text() == f"__cookie__:{password}" and len(password) == 64
    assert read_cookie(cookie) == (user, password)
    running = RpcServerThread(make_rpc_app(chain, user=user, password=password)).start()
    try:
        b = BitcoinRpcBackend(running.url, Network.REGTEST, cookie_file=cookie, retries=0)
        assert b.tip() == chain.tip()
        b.close()
    finally:
        running.stop()


def test_wrong_network_is_refused(backend: BitcoinRpcBackend, server: RpcServerThread) -> None:
    mainnet = BitcoinRpcBackend(server.url, Network.MAINNET, user=USER, password=PASSWORD)
    with pytest.raises(NetworkMismatch):
        mainnet.mempool_txids()
    mainnet.close()


def test_closed_port_is_dependency_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = BitcoinRpcBackend(
        f"http://127.0.0.1:{port}",
        Network.REGTEST,
        user=USER,
        password=PASSWORD,
        retries=2,
        backoff_s=0.01,
    )
    with pytest.raises(DependencyUnavailable, match="3 attempt"):
        backend.tip()
    backend.close()


# -- transport edge cases against a scripted server ----------------------------------------


@pytest.fixture
def scripted() -> Iterator[
    tuple[RpcServerThread, list[Callable[[], Response]], list[dict[str, Any]]]
]:
    """A live server answering each request with the next scripted response."""
    script: list[Callable[[], Response]] = []
    seen: list[dict[str, Any]] = []

    async def endpoint(request: Request) -> Response:
        seen.append(await request.json())
        return script.pop(0)()

    running = RpcServerThread(Starlette(routes=[Route("/", endpoint, methods=["POST"])])).start()
    try:
        yield running, script, seen
    finally:
        running.stop()


def ok(result: str) -> Callable[[], Response]:
    return lambda: Response(
        f'{{"result": {result}, "error": null, "id": 1}}', media_type="application/json"
    )


REGTEST_INFO = ok(
    '{"chain": "regtest", "blocks": 7, "headers": 7, "initialblockdownload": false, '
    '"pruned": false, "bestblockhash": "' + "ab" * 32 + '"}'
)
# The rest of the once-per-connection node check: genesis block and version.
NODE_CHECK_REST = [
    ok('"' + CORE_GENESIS_HASHES["regtest"] + '"'),
    ok('{"version": 280000, "subversion": "/Satoshi:28.0.0/"}'),
]


def test_feerate_rounds_up_and_refuses_without_an_estimate(scripted: Any) -> None:
    running, script, seen = scripted
    backend = BitcoinRpcBackend(running.url, Network.REGTEST, retries=0, fee_floor_sat_per_vb=2)
    script.extend(
        [
            REGTEST_INFO,
            *NODE_CHECK_REST,
            ok('{"feerate": 0.00012341, "blocks": 6}'),  # 12.341 sat/vB -> 13
            ok('{"feerate": 0.00001000, "blocks": 2}'),  # 1 sat/vB -> the floor, 2
            ok('{"errors": ["Insufficient data or no feerate found"], "blocks": 0}'),
        ]
    )
    assert backend.fee_rate_sat_per_vb(6) == 13
    assert backend.fee_rate_sat_per_vb(2) == 2
    # No estimate and no fallback configured: refused, never the floor.
    with pytest.raises(FeeEstimateUnavailable):
        backend.fee_rate_sat_per_vb(2000)
    assert seen[-1]["params"] == [1008, "conservative"]
    backend.close()


def test_5xx_is_retried_but_rpc_errors_are_not(scripted: Any) -> None:
    running, script, seen = scripted
    backend = BitcoinRpcBackend(running.url, Network.REGTEST, retries=2, backoff_s=0.01)
    error_reply = (
        '{"result": null, "error": {"code": -26, '
        '"message": "insufficient fee, rejecting replacement"}, "id": 1}'
    )
    script.extend(
        [
            lambda: Response("Work queue depth exceeded", status_code=503),
            REGTEST_INFO,
            *NODE_CHECK_REST,
            ok('[{"txid": "' + "cd" * 32 + '", "wtxid": "' + "cd" * 32 + '", "allowed": true}]'),
            lambda: Response(error_reply, status_code=500, media_type="application/json"),
        ]
    )
    assert backend.tip().height == 7  # after one retry
    with pytest.raises(RpcError) as info:
        backend.broadcast(b"\x02" * 60)
    assert info.value.reason == "insufficient fee" and info.value.rpc_code == -26
    assert [r["method"] for r in seen] == [
        "getblockchaininfo",
        "getblockchaininfo",
        "getblockhash",
        "getnetworkinfo",
        "testmempoolaccept",
        "sendrawtransaction",
    ]

    script.extend([lambda: Response("busy", status_code=502)] * 3)
    with pytest.raises(DependencyUnavailable):
        backend.mempool_txids()
    assert not script
    backend.close()


def test_reject_reason_parsing() -> None:
    assert reject_reason("min relay fee not met, 100 < 110") == "min relay fee not met"
    assert reject_reason("mandatory-script-verify-flag-failed (Signature must be zero)") == (
        "mandatory-script-verify-flag-failed"
    )
    assert reject_reason("txn-mempool-conflict") == "txn-mempool-conflict"


# -- the server's Core shapes --------------------------------------------------------------


def test_server_speaks_core_json_rpc(
    chain: EmbeddedChain, server: RpcServerThread, alice: TestKey
) -> None:
    address = script_to_address(alice.script_pubkey, Network.REGTEST)
    mined = raw_rpc(
        server, {"jsonrpc": "2.0", "id": "m", "method": "generatetoaddress", "params": [2, address]}
    )
    assert mined.status_code == 200
    hashes = mined.json()["result"]
    assert mined.json()["id"] == "m" and len(hashes) == 2
    assert chain.utxos_for_script(alice.script_pubkey)

    batch = raw_rpc(
        server,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount"},
            {"jsonrpc": "2.0", "id": 2, "method": "getblock", "params": {"blockhash": hashes[1]}},
            {"jsonrpc": "2.0", "id": 3, "method": "nosuchmethod"},
            {"jsonrpc": "2.0", "id": 4, "method": "getblockhash", "params": [99]},
            {"jsonrpc": "2.0", "id": 5, "method": "getblock", "params": ["00" * 32, 0]},
            {"jsonrpc": "2.0", "id": 6, "method": "getrawmempool"},
            {"jsonrpc": "2.0", "id": 7, "method": "getblockchaininfo"},
            {"jsonrpc": "2.0", "method": "getblockcount"},  # a notification: no reply
        ],
    )
    assert batch.status_code == 200
    replies = {r["id"]: r for r in batch.json()}
    assert set(replies) == {1, 2, 3, 4, 5, 6, 7}
    assert replies[1]["result"] == 2
    block = replies[2]["result"]
    assert block["height"] == 2 and block["confirmations"] == 1 and block["hash"] == hashes[1]
    assert block["previousblockhash"] == hashes[0] and len(block["tx"]) == 1
    assert replies[3]["error"]["code"] == -32601
    assert replies[4]["error"] == {"code": -8, "message": "Block height out of range"}
    assert replies[5]["error"]["code"] == -5
    assert replies[6]["result"] == []
    assert replies[7]["result"]["chain"] == "regtest" and replies[7]["result"]["blocks"] == 2
    assert replies[7]["result"]["chainwork"] == f"{6:064x}"
    assert replies[7]["result"]["size_on_disk"] > 0

    coinbase_txid = block["tx"][0]
    tx = raw_rpc(server, {"id": 1, "method": "getrawtransaction", "params": [coinbase_txid]})
    coinbase_raw = chain.get_transaction(coinbase_txid)
    assert coinbase_raw is not None
    assert tx.json() == {"result": coinbase_raw.hex(), "error": None, "id": 1}
    missing = raw_rpc(server, {"id": 1, "method": "nosuchmethod"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == -32601
    bad_address = raw_rpc(
        server, {"id": 1, "method": "generatetoaddress", "params": [1, "bc1qnope"]}
    )
    assert bad_address.json()["error"] == {"code": -5, "message": "Error: Invalid address"}
    parse_error = httpx.post(server.url, content=b"{nope", auth=(USER, PASSWORD))
    assert parse_error.json()["error"]["code"] == -32700


def test_testmempoolaccept_shape(
    chain: EmbeddedChain, server: RpcServerThread, alice: TestKey, bob: TestKey
) -> None:
    (coin,) = fund(chain, alice)
    good = pay(coin, bob, fee=2_000)
    orphan = pay(Prevout("cd" * 32, 0, 10_000, alice), bob)
    reply = raw_rpc(
        server, {"id": 1, "method": "testmempoolaccept", "params": [[good.hex(), orphan.hex()]]}
    )
    first, second = reply.json()["result"]
    assert first["txid"] == txid_of(good) and first["allowed"] is True
    assert Decimal(str(first["fees"]["base"])) == Decimal("0.00002")
    assert second == {
        "txid": txid_of(orphan),
        "wtxid": second["wtxid"],
        "allowed": False,
        "reject-reason": "missing-inputs",
    }


def test_factory_opens_the_configured_backend(tmp_path: Path) -> None:
    dev_settings = Settings(data_dir=tmp_path, embedded_fee_rate_sat_per_vb=4)
    # The product does not open the dev chain; the CLI (walletsvc.devchain) does.
    with pytest.raises(InvalidInput):
        open_chain(dev_settings)
    embedded = open_dev_chain(dev_settings)
    try:
        assert isinstance(embedded, EmbeddedChain)
        assert embedded.fee_rate_sat_per_vb(1) == 4
        assert embedded.chain_dir == tmp_path / "chain"
    finally:
        embedded.close()
    rpc = open_chain(Settings(data_dir=tmp_path, chain_backend="rpc", rpc_url="http://127.0.0.1:9"))
    assert isinstance(rpc, BitcoinRpcBackend) and rpc.network is Network.REGTEST
    rpc.close()


def test_dev_tools_reach_a_running_chain(chain: EmbeddedChain, alice: TestKey) -> None:
    with pytest.raises(DependencyUnavailable):
        embedded_rpc_endpoint(chain.chain_dir)
    running = serve_embedded_rpc(chain)
    try:
        url, cookie = embedded_rpc_endpoint(chain.chain_dir)
        client = BitcoinRpcBackend(url, Network.REGTEST, cookie_file=cookie, retries=0)
        address = script_to_address(alice.script_pubkey, Network.REGTEST)
        hashes = client.call("generatetoaddress", 3, address)
        assert chain.tip().hash == hashes[-1] and chain.tip().height == 3
        client.close()
    finally:
        running.stop()


def test_server_answers_the_node_check_and_the_explicit_params(
    chain: EmbeddedChain, server: RpcServerThread, alice: TestKey, bob: TestKey
) -> None:
    info = raw_rpc(server, {"id": 1, "method": "getnetworkinfo", "params": []}).json()["result"]
    assert info["version"] == 280000 and info["subversion"] == "/Satoshi:28.0.0/"
    assert '"relayfee": 0.00001000' in raw_rpc(server, {"id": 1, "method": "getnetworkinfo"}).text
    genesis = raw_rpc(server, {"id": 1, "method": "getblockhash", "params": [0]}).json()
    assert genesis["result"] == CORE_GENESIS_HASHES["regtest"]
    for mode in ("conservative", "ECONOMICAL", "unset"):
        reply = raw_rpc(server, {"id": 1, "method": "estimatesmartfee", "params": [6, mode]})
        assert reply.json()["result"] == {"feerate": 0.00003, "blocks": 6}
    bad = raw_rpc(server, {"id": 1, "method": "estimatesmartfee", "params": [6, "cheap"]})
    assert bad.json()["error"]["code"] == -8

    # maxfeerate as the backend sends it: a tx paying ~70 sat/vB against a 10 sat/vB ceiling.
    (coin,) = fund(chain, alice)
    pricey = pay(coin, bob, fee=10_000)
    capped = BitcoinRpcBackend(
        server.url,
        Network.REGTEST,
        user=USER,
        password=PASSWORD,
        retries=0,
        max_fee_rate_sat_per_vb=10,
    )
    assert capped.test_accept(pricey).reason == "max-fee-exceeded"
    with pytest.raises(RpcError) as refused:
        capped.broadcast(pricey)
    assert (refused.value.reason, refused.value.rpc_code) == ("max-fee-exceeded", -25)
    assert chain.mempool_txids() == set()
    capped.close()


def test_generateblock_shape(
    chain: EmbeddedChain, server: RpcServerThread, alice: TestKey, bob: TestKey
) -> None:
    """Core's generateblock: output, then raw transactions or mempool txids, then submit."""
    first, second = fund(chain, alice, 2)
    theft = pay(first, bob, fee=1_000)
    chain.broadcast(theft)
    shield = pay(first, alice, fee=5_000)
    chain.broadcast(shield)
    assert chain.mempool_txids() == {txid_of(shield)}
    other = pay(second, bob, fee=1_000)
    chain.broadcast(other)
    address = script_to_address(bob.script_pubkey, Network.REGTEST)

    def generateblock(*params: Any) -> dict[str, Any]:
        reply = raw_rpc(server, {"id": 7, "method": "generateblock", "params": list(params)})
        body: dict[str, Any] = reply.json()
        return body

    unsubmitted = generateblock(address, [txid_of(other)], False)
    assert unsubmitted["error"] is None and set(unsubmitted["result"]) == {"hash", "hex"}
    assert chain.tip().hash != unsubmitted["result"]["hash"]

    mined = generateblock(address, [theft.hex(), txid_of(other)])
    assert mined == {"result": {"hash": chain.tip().hash}, "error": None, "id": 7}
    block = CBlock.deserialize(chain.block_bytes(mined["result"]["hash"]))
    assert [str(b2lx(tx.GetTxid())) for tx in block.vtx[1:]] == [txid_of(theft), txid_of(other)]
    assert chain.mempool_txids() == set()

    assert generateblock(address, ["ab" * 32])["error"] == {
        "code": -5,
        "message": f"Transaction {'ab' * 32} not in mempool.",
    }
    assert generateblock(address, ["zz"])["error"] == {
        "code": -22,
        "message": "Transaction decode failed for zz. Make sure the tx has at least one input.",
    }
    assert generateblock("bc1qnope", [])["error"] == {
        "code": -5,
        "message": "Error: Invalid address or descriptor",
    }
    invalid = generateblock(address, [shield.hex()])["error"]  # its input is spent now
    assert invalid["code"] == -25 and invalid["message"].startswith("TestBlockValidity failed")
    named = raw_rpc(
        server,
        {"id": 1, "method": "generateblock", "params": {"output": address, "transactions": []}},
    )
    assert named.json()["result"]["hash"] == chain.tip().hash


def test_replacement_refusals_carry_core_messages(
    chain: EmbeddedChain,
    server: RpcServerThread,
    backend: BitcoinRpcBackend,
    alice: TestKey,
    bob: TestKey,
) -> None:
    (coin,) = fund(chain, alice)
    backend.broadcast(pay(coin, bob, fee=1_000, sequence=0xFFFFFFFF))  # no BIP125 signal
    short = pay(coin, alice, fee=1_005)
    assert backend.test_accept(short).reason == "insufficient fee"
    reply = raw_rpc(server, {"id": 1, "method": "sendrawtransaction", "params": [short.hex()]})
    assert reply.json()["error"] == {
        "code": -26,
        "message": f"insufficient fee, rejecting replacement {txid_of(short)}, "
        "not enough additional fees to relay; 0.00000005 < 0.00000011",
    }
    replacement = pay(coin, alice, fee=1_011)
    assert backend.broadcast(replacement) == txid_of(replacement)
    assert backend.mempool_txids() == {txid_of(replacement)}
