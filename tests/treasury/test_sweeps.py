"""Sweeps to cold storage on a chain: thresholds from the default policy (ceiling
5 BTC, target 2 BTC, floor 0.5 BTC), the cold address derived independently with embit."""

from __future__ import annotations

import hashlib
from typing import Any

from bitcoin.core import b2lx
from embit import bip32, script
from embit.networks import NETWORKS
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.helpers import (
    audit_events,
    decode_tx,
    dev_chain,
    external_destination,
    prevout_amount,
    request_payout,
    verify_audit,
)
from tests.signer_helpers import install_cold_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import ChainTransaction
from walletsvc.db.models_treasury import Sweep
from walletsvc.governance.tokens import create_token
from walletsvc.treasury.cold import set_initial_cold_destination

REGTEST = NETWORKS["regtest"]
TARGET = 200_000_000
FLOOR = 50_000_000
BIG_PAYOUT = 20_000_000  # above the 0.1 BTC tier: waits for staff approval


def cold_account() -> bip32.HDKey:
    root = bip32.HDKey.from_seed(hashlib.sha256(b"treasury cold").digest(), version=REGTEST["xprv"])
    return root.derive("m/84h/1h/0h").to_public()


def cold_address(index: int) -> str:
    """The cold address ``index``, derived by embit, not by walletsvc."""
    return str(script.p2wpkh(cold_account().derive([0, index]).key).address(REGTEST))


def with_cold(runtime: Runtime) -> None:
    tpub = cold_account().to_base58(REGTEST["xpub"])
    set_initial_cold_destination(runtime.db, runtime.tags, wallet=WALLET, text=tpub, actor="test")
    install_cold_in_signer(runtime.settings, WALLET, tpub)  # the signer operator's copy


def sweep_outputs(raw_hex: str) -> tuple[int, dict[str, int]]:
    """(value in, {address: value}) of a signed sweep, priced from the chain itself."""
    from walletsvc.domain.address import script_to_address
    from walletsvc.domain.network import Network

    tx = decode_tx(raw_hex)
    outs = {
        script_to_address(bytes(o.scriptPubKey), Network.REGTEST): int(o.nValue) for o in tx.vout
    }
    return len(tx.vin), outs


def only_sweep(runtime: Runtime) -> tuple[Sweep, ChainTransaction]:
    with runtime.db.read() as uow:
        s = uow.session
        rows = s.execute(
            select(Sweep, ChainTransaction).join(
                ChainTransaction, ChainTransaction.id == Sweep.transaction_id
            )
        ).all()
    assert len(rows) == 1
    return rows[0][0], rows[0][1]


def test_ceiling_sweep_keeps_target_plus_pending_payouts_exactly(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = dev_chain(runtime)
    with_cold(runtime)
    fund_wallet(runtime)  # 110 coinbases: 11 mature (550 BTC), far above the 5 BTC ceiling
    destination, _ = external_destination("patient big miner")
    pending = request_payout(
        client, tokens.all, key="big-1", destination=destination, amount_sat=BIG_PAYOUT
    )
    assert pending.status_code == 201 and pending.json()["status"] == "pending_approval"
    view = client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()
    mature = view["balances"]["confirmed_sat"]
    assert mature == 11 * 50 * 100_000_000 and view["balances"]["reserved_sat"] == BIG_PAYOUT

    runtime.tick()

    sweep, tx = only_sweep(runtime)
    assert tx.kind == "sweep" and tx.status == "broadcast" and tx.txid in chain.mempool_txids()
    decoded = decode_tx(tx.raw_tx)
    value_in = sum(prevout_amount(chain, b2lx(i.prevout.hash), i.prevout.n) for i in decoded.vin)
    assert value_in == mature  # every mature coin, nothing immature
    outs = {bytes(o.scriptPubKey): int(o.nValue) for o in decoded.vout}
    cold_script = bytes.fromhex(sweep.script_pubkey)
    assert sweep.address == cold_address(0) and sweep.cold_index == 0
    kept = TARGET + BIG_PAYOUT  # the pending payout's money stays hot
    fee = value_in - sum(outs.values())
    assert fee == tx.fee_sat == sweep.fee_sat > 0
    assert outs[cold_script] == sweep.amount_sat == value_in - kept - fee
    change = [v for s, v in outs.items() if s != cold_script]
    assert change == [kept] and sweep.kept_sat == kept

    # The next block confirms the sweep and matures one more 50 BTC coinbase of ours: above
    # the ceiling again, so the next pass sweeps that coin to the NEXT cold address, keeping
    # exactly the same amount hot.
    chain.mine(1)
    runtime.tick()
    with runtime.db.read() as uow:
        s = uow.session
        first = s.get(ChainTransaction, tx.id)
        second = s.scalar(select(Sweep).where(Sweep.cold_index == 1))
        assert first is not None and first.status == "confirmed"
        assert second is not None
        second_tx = s.get(ChainTransaction, second.transaction_id)
    assert second.address == cold_address(1) and second.kept_sat == kept
    assert second.amount_sat == 50 * 100_000_000 - second.fee_sat
    assert second_tx is not None and second_tx.txid in chain.mempool_txids()
    view = client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()
    assert view["hot_thresholds"] == {
        "ceiling_sat": 500_000_000,
        "target_sat": TARGET,
        "floor_sat": FLOOR,
    }
    assert view["cold_destination"]["kind"] == "wpkh"
    assert len(view["cold_destination"]["fingerprint"]) == 16
    assert view["cold_destination"]["next_index"] == 2
    listed = client.get("/v1/sweeps", headers=auth(tokens.read_only)).json()["sweeps"]
    assert [(s["txid"], s["status"], s["trigger"]) for s in listed] == [
        (second_tx.txid, "broadcast", "ceiling"),
        (tx.txid, "confirmed", "ceiling"),
    ]
    events = audit_events(runtime.db, "sweep.signed")
    assert [e.data["address"] for e in events] == [cold_address(0), cold_address(1)]
    assert verify_audit(runtime).ok


def test_forced_sweep_uses_the_next_cold_address(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = dev_chain(runtime)
    with_cold(runtime)
    runtime.settings.auto_sweep = False  # only operators sweep in this test
    fund_wallet(runtime)
    no_scope = create_token(
        runtime.db, runtime.tags, name="reader", scopes=["read"], actor="test"
    ).secret
    refused = client.post(f"/v1/wallets/{WALLET}/sweeps", headers=auth(no_scope))
    assert refused.status_code == 403

    txids = []
    for index in range(2):
        response = client.post(f"/v1/wallets/{WALLET}/sweeps", headers=auth(tokens.all))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        assert body["trigger"] == "forced" and body["cold_index"] == index
        assert body["address"] == cold_address(index)
        assert body["kept_sat"] == TARGET
        txids.append(body["txid"])
        # One sweep at a time: the next waits for this one to confirm.
        again = client.post(f"/v1/wallets/{WALLET}/sweeps", headers=auth(tokens.all))
        assert again.status_code == 409
        chain.mine(1)
        runtime.scanner.sync()
        # Another coinbase matures with each block, so there is always something to sweep.
    assert all(chain.confirmations(t) >= 1 for t in txids)
    _, outs = sweep_outputs(chain.get_transaction(txids[1]).hex())  # type: ignore[union-attr]
    assert cold_address(1) in outs
    actors = [e.actor for e in audit_events(runtime.db, "sweep.signed")]
    assert actors == ["token:engine", "token:engine"]


def test_refill_alert_below_the_floor(client: TestClient, runtime: Runtime, tokens: Tokens) -> None:
    with_cold(runtime)
    seen: list[Any] = []
    runtime.sweeper.alert_hooks.append(seen.append)
    # An empty wallet is below its 0.5 BTC floor.
    runtime.tick()
    runtime.tick()  # a second pass does not raise a second alert
    assert len(seen) == 1
    alert = seen[0]
    assert (alert.wallet, alert.balance_sat, alert.refill_sat) == (WALLET, 0, TARGET)
    events = audit_events(runtime.db, "hot.refill_alert")
    assert len(events) == 1 and events[0].data["refill_sat"] == TARGET
    gauge = REGISTRY.get_sample_value("walletsvc_hot_refill_needed_sat", {"wallet": WALLET})
    assert gauge == TARGET

    fund_wallet(runtime, blocks=100)  # one mature 50 BTC coin: above the floor again
    runtime.tick()
    assert len(audit_events(runtime.db, "hot.refill_cleared")) == 1
    assert REGISTRY.get_sample_value("walletsvc_hot_refill_needed_sat", {"wallet": WALLET}) == 0


def test_no_cold_destination_means_no_sweep(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    funded.tick()
    with funded.db.read() as uow:
        s = uow.session
        assert s.scalars(select(Sweep)).all() == []
    forced = client.post(f"/v1/wallets/{WALLET}/sweeps", headers=auth(tokens.all))
    assert forced.status_code == 409 and forced.json()["error"]["code"] == "no_cold_destination"
    view = client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()
    assert view["cold_destination"] is None
