"""The whole payout path with the production chain backend: BitcoinRpcBackend speaking JSON-RPC
over loopback HTTP to the Core-shaped server (make_rpc_app) in front of an embedded chain."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from bitcoin.core import CBlockHeader, b2lx
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, auth
from tests.helpers import (
    PAYOUT_SAT,
    audit_events,
    decode_tx,
    external_destination,
    initialised,
    opened,
    request_payout,
    show_withdrawal,
    wallet_balances,
)
from walletsvc.api.app import create_app
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.config import Settings
from walletsvc.db.models import ChainTransaction
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.devchain.rpc_server import RpcServerThread, make_rpc_app
from walletsvc.domain.network import Network
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

USER, PASSWORD = "walletsvc", "rpc test password"


@contextmanager
def rpc_node(settings: Settings) -> Iterator[tuple[EmbeddedChain, RpcServerThread]]:
    chain = EmbeddedChain(settings.data_dir / "node", fee_rate_sat_per_vb=4)
    server = RpcServerThread(make_rpc_app(chain, user=USER, password=PASSWORD)).start()
    try:
        yield chain, server
    finally:
        server.stop()
        chain.close()


def test_payout_over_the_rpc_backend(settings: Settings) -> None:
    token = initialised(settings)
    destination, dest_script = external_destination("rpc miner")
    with rpc_node(settings) as (node, server):
        backend = BitcoinRpcBackend(
            server.url, Network.REGTEST, user=USER, password=PASSWORD, retries=0
        )
        with opened(settings, chain=backend) as runtime:
            assert runtime.chain is backend
            with runtime.db.read() as uow:
                session = uow.session
                deposit = current_address(uow, get_wallet(uow, WALLET))
            node.mine(110, bytes.fromhex(deposit.script_pubkey))
            report = runtime.scanner.sync()  # every block fetched over JSON-RPC
            assert report.tip_height == 110 and report.blocks_scanned == 111

            with TestClient(create_app(settings, runtime=runtime)) as client:
                ready = client.get("/v1/ready", headers=auth(token)).json()
                assert ready["checks"]["chain"]["height"] == 110
                balances = wallet_balances(client, token)
                assert balances["confirmed_sat"] == 11 * 50 * 100_000_000
                created = request_payout(client, token, key="rpc-1", destination=destination)
                assert created.status_code == 201, created.text

                runtime.tick()  # sign, then sendrawtransaction over RPC
                view = show_withdrawal(client, token, created.json()["id"])
                assert view["status"] == "broadcast"
                assert node.mempool_txids() == {view["txid"]}
                assert node.get_transaction(view["txid"]) == bytes.fromhex(view["raw_tx"])
                with runtime.db.read() as uow:
                    session = uow.session
                    stored = session.scalars(select(ChainTransaction)).one()
                # The fee rate came from estimatesmartfee (the node's estimate, 4 sat/vB).
                assert stored.fee_rate_sat_per_vb == backend.fee_rate_sat_per_vb(6) == 4
                assert stored.fee_sat >= 4 * stored.vsize

                (mined,) = node.mine(1)
                runtime.tick()
                view = show_withdrawal(client, token, created.json()["id"])
                assert view["status"] == "confirmed" and view["confirmations"] == 1
                with runtime.db.read() as uow:
                    session = uow.session
                    stored = session.scalars(select(ChainTransaction)).one()
                assert (stored.block_height, stored.block_hash) == (111, mined)
                tx = decode_tx(view["raw_tx"])
                assert [int(o.nValue) for o in tx.vout if bytes(o.scriptPubKey) == dest_script] == [
                    PAYOUT_SAT
                ]
                after = wallet_balances(client, token)
                assert after["total_sat"] == balances["total_sat"] - PAYOUT_SAT - view["fee_sat"]

                # A reorganisation seen through RPC: two blocks on the payout block's parent.
                parent = node.block_hash(110)
                assert parent is not None
                for nonce in (1, 2):
                    raw = node.build_block(
                        parent, [], coinbase_script_pubkey=b"\x6a", extra_nonce=nonce
                    )
                    node.submit_block(raw)
                    parent = str(b2lx(CBlockHeader.deserialize(raw[:80]).GetHash()))
                report = runtime.scanner.sync()
                assert report.rolled_back_to == 110
                assert show_withdrawal(client, token, created.json()["id"])["status"] == "broadcast"
                assert len(audit_events(runtime.db, "chain.reorg")) == 1
                node.mine(1)
                runtime.scanner.sync()
                view = show_withdrawal(client, token, created.json()["id"])
                assert view["status"] == "confirmed" and view["confirmations"] == 1
                assert client.get(f"/v1/wallets/{WALLET}", headers=auth(token)).status_code == 200
