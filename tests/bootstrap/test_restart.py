"""Close the Runtime and open a new one on the same settings: database and chain survive, the
scanner resumes where it stopped, and payouts keep working."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import WALLET, auth, fund_wallet
from tests.helpers import (
    audit_events,
    count_rows,
    embedded,
    external_destination,
    initialised,
    opened,
    request_payout,
    show_withdrawal,
    utxo_keys,
    verify_audit,
    wallet_balances,
)
from walletsvc.api.app import create_app
from walletsvc.config import Settings
from walletsvc.db.models import AuditEvent, ChainTransaction, ScannedBlock, Utxo, Withdrawal

pytestmark = pytest.mark.kernel


def _snapshot(client: TestClient, token: str) -> dict[str, Any]:
    listing = client.get("/v1/withdrawals", headers=auth(token))
    assert listing.status_code == 200
    return {
        "wallet": client.get(f"/v1/wallets/{WALLET}", headers=auth(token)).json(),
        "withdrawals": listing.json()["withdrawals"],
        "address": client.get(
            f"/v1/wallets/{WALLET}/deposit-addresses/current", headers=auth(token)
        ).json(),
    }


def test_restart_keeps_everything_and_resumes_scanning(settings: Settings) -> None:
    token = initialised(settings)
    first_dest, _ = external_destination("restart miner 1")
    second_dest, _ = external_destination("restart miner 2")
    with opened(settings) as runtime:
        chain = embedded(runtime)
        fund_wallet(runtime)
        with TestClient(create_app(settings, runtime=runtime)) as client:
            one = request_payout(client, token, key="r-1", destination=first_dest).json()
            runtime.tick()
            chain.mine(1)
            runtime.tick()
            assert show_withdrawal(client, token, one["id"])["status"] == "confirmed"
            # A second payout is broadcast but not yet mined when the service stops.
            two = request_payout(client, token, key="r-2", destination=second_dest).json()
            runtime.tick()
            pending = show_withdrawal(client, token, two["id"])
            assert pending["status"] == "broadcast"
            before = _snapshot(client, token)
        tip = chain.tip()
        utxos = utxo_keys(runtime.db)
        counts = count_rows(
            runtime.db, Withdrawal, ChainTransaction, Utxo, ScannedBlock, AuditEvent
        )
        assert verify_audit(runtime).ok

    with opened(settings) as runtime:
        chain = embedded(runtime)
        assert chain.tip() == tip
        assert pending["txid"] in chain.mempool_txids()
        assert verify_audit(runtime).ok
        with TestClient(create_app(settings, runtime=runtime)) as client:
            assert _snapshot(client, token) == before
            report = runtime.scanner.sync()
            assert (report.blocks_scanned, report.rolled_back_to) == (0, None)
            assert utxo_keys(runtime.db) == utxos
            assert (
                count_rows(runtime.db, Withdrawal, ChainTransaction, Utxo, ScannedBlock, AuditEvent)
                == counts
            )

            # The pending payout confirms after the restart, scanning only the new block.
            chain.mine(1)
            report = runtime.scanner.sync()
            assert report.blocks_scanned == 1 and report.tip_height == tip.height + 1
            assert show_withdrawal(client, token, two["id"])["status"] == "confirmed"

            # And a new payout goes all the way.
            third_dest, third_script = external_destination("restart miner 3")
            three = request_payout(client, token, key="r-3", destination=third_dest)
            assert three.status_code == 201
            # Replaying an idempotency key from before the restart still answers 200.
            replay = request_payout(client, token, key="r-1", destination=first_dest)
            assert replay.status_code == 200 and replay.json()["id"] == one["id"]
            runtime.tick()
            chain.mine(1)
            runtime.tick()
            view = show_withdrawal(client, token, three.json()["id"])
            assert view["status"] == "confirmed" and view["confirmations"] == 1
            assert third_script.hex() in view["raw_tx"]
            balances = wallet_balances(client, token)
            assert balances["in_flight_sat"] == 0 and balances["unconfirmed_sat"] == 0

        keys = utxo_keys(runtime.db)
        assert len(keys) == len(set(keys))
        assert verify_audit(runtime).ok
        assert len(audit_events(runtime.db, "transaction.confirmed")) == 3
