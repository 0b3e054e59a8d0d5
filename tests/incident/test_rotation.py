"""Key rotation drills on the embedded chain, checked on chain and with embit.

The drill is the runbook's key-compromise response: freeze -> rotate -> approvals -> old-epoch
coins swept to cold -> a new current address of the new epoch -> unfreeze -> payouts signed
with the new epoch's keys. Its duration is printed (docs/runbook.md quotes it); nothing here
asserts on time.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from bitcoin.core import b2lx
from embit import bip32, script
from embit.networks import NETWORKS
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.governance_helpers import Team, aligned_now, later
from tests.helpers import audit_events, decode_tx, embedded, external_destination, run_cli
from tests.incident.test_unfreeze import approve
from tests.treasury.test_sweeps import cold_address, with_cold
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Address, ChainTransaction, Utxo, Wallet, Withdrawal
from walletsvc.db.models_risk import KeyRotation
from walletsvc.domain.address import script_to_address
from walletsvc.domain.network import Network
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

REGTEST = NETWORKS["regtest"]


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob"):
        team.add(name)
    team.add("otto", role="operator")
    return team


def pay(runtime: Runtime, key: str, amount: int = 1_000_000) -> str:
    return request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(WALLET, external_destination(key)[0], amount, key),
        idempotency_key=key,
        token_id="engine",
        actor="token:engine",
    ).withdrawal_id


def wallet_row(runtime: Runtime) -> Wallet:
    with runtime.db.read() as uow:
        return get_wallet(uow, WALLET)


def epoch_address(xpub: str, index: int) -> str:
    """Receive address ``index`` of an account xpub, derived by embit (not walletsvc)."""
    key = bip32.HDKey.from_base58(xpub)
    return str(script.p2wpkh(key.derive([0, index]).key).address(REGTEST))


def input_epochs(runtime: Runtime, raw_hex: str) -> set[int]:
    tx = decode_tx(raw_hex)
    with runtime.db.read() as uow:
        s = uow.session
        return {
            s.execute(
                select(Address.epoch)
                .join(Utxo, Utxo.address_id == Address.id)
                .where(Utxo.txid == b2lx(i.prevout.hash), Utxo.vout == i.prevout.n)
            ).scalar_one()
            for i in tx.vin
        }


def mined_tx(runtime: Runtime, txid: str) -> str:
    raw = embedded(runtime).get_transaction(txid)
    assert raw is not None, "not on chain"
    return raw.hex()


def rotate_with_quorum(client: TestClient, team: Team, reason: str) -> dict[str, str]:
    otto = team.login(team.members["otto"])
    asked = client.post(
        f"/v1/wallets/{WALLET}/rotate", headers=otto.headers(), json={"reason": reason}
    )
    assert asked.status_code == 201, asked.text
    body = asked.json()
    assert body["status"] == "pending_approval"
    t0 = aligned_now()
    assert (
        approve(team.runtime, team.members["alice"], body["approval_request_id"], t0) == "pending"
    )
    assert (
        approve(team.runtime, team.members["bob"], body["approval_request_id"], later(t0, 1))
        == "approved"
    )
    return body  # type: ignore[no-any-return]


def test_rotation_drill(client: TestClient, runtime: Runtime, tokens: Tokens, team: Team) -> None:
    started = time.monotonic()
    runtime.settings.auto_sweep = False  # only the rotation moves coins to cold here
    with_cold(runtime)
    fund_wallet(runtime)  # 110 coinbases to epoch 1, 10 mature
    old = wallet_row(runtime)
    with runtime.db.read() as uow:
        s = uow.session
        old_current = current_address(uow, old).address
    # A payout signed just before the incident and never broadcast: it must be re-signed.
    held = pay(runtime, "held payout")
    assert runtime.worker.sign_approved(old.id) is not None

    # 1. Freeze everything.
    frozen = client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": "key leak"})
    assert frozen.status_code == 201
    runtime.tick()
    assert embedded(runtime).mempool_txids() == set()  # the signed payout is held

    # 2-3. Rotate; approvals; the rotation happens in the approval's transaction.
    proposal = rotate_with_quorum(client, team, "hot seed may be exposed")
    with runtime.db.read() as uow:
        s = uow.session
        rotation = s.get(KeyRotation, proposal["id"])
        assert rotation is not None and rotation.status == "rotated"
        new_xpub = rotation.new_xpub or ""
        voided = s.scalar(select(ChainTransaction).where(ChainTransaction.status == "voided"))
        assert voided is not None
        held_row = s.get(Withdrawal, held)
        assert held_row is not None and held_row.transaction_id == voided.id
    assert wallet_row(runtime).current_epoch == 2
    applied = audit_events(runtime.db, "key_rotation.applied")[-1]
    assert applied.data["xpub"] == new_xpub and applied.data["approved_by"] == ["alice", "bob"]

    # 4. Old-epoch coins swept to cold (while frozen), verified on chain.
    runtime.tick()
    mempool = embedded(runtime).mempool_txids()
    assert len(mempool) == 1
    (sweep_txid,) = mempool
    embedded(runtime).mine(1, external_destination("pool")[1])
    runtime.tick()
    sweep = decode_tx(mined_tx(runtime, sweep_txid))
    outs = [script_to_address(bytes(o.scriptPubKey), Network.REGTEST) for o in sweep.vout]
    assert outs == [cold_address(0)]
    spent = {(b2lx(i.prevout.hash), i.prevout.n) for i in sweep.vin}
    voided_inputs = {(b2lx(i.prevout.hash), i.prevout.n) for i in decode_tx(voided.raw_tx).vin}
    assert voided_inputs <= spent, "the sweep must make the voided payout unspendable"
    assert input_epochs(runtime, sweep.serialize().hex()) == {1}
    with runtime.db.read() as uow:
        s = uow.session
        left = s.scalars(
            select(Utxo)
            .join(Address, Address.id == Utxo.address_id)
            .where(Address.epoch == 1, Utxo.spent_by_txid.is_(None), Utxo.block_height <= 11)
        ).all()
        assert left == []  # every mature old coin went (immature coinbases follow later)

    # 5. The new current address: not the old one, and derived from the new xpub.
    with runtime.db.read() as uow:
        s = uow.session
        new_current = current_address(uow, wallet_row(runtime))
    assert new_current.epoch == 2 and new_current.address != old_current
    assert new_current.address == epoch_address(new_xpub, new_current.index)

    # 6. Unfreeze with quorum; the pool's coinbases now go to the new epoch.
    otto = team.members["otto"]
    asked = client.post("/v1/unfreeze", headers=otto.headers(), json={"reason": "rotated"})
    assert asked.status_code == 201, asked.text
    t1 = later(aligned_now(), 4)
    approve(runtime, team.members["alice"], asked.json()["approval_request_id"], t1)
    approve(runtime, team.members["bob"], asked.json()["approval_request_id"], later(t1, 1))
    shown = client.get(f"/v1/wallets/{WALLET}/deposit-addresses/current", headers=auth(tokens.all))
    assert shown.status_code == 200 and shown.json()["address"] == new_current.address
    fund_wallet(runtime)  # coinbases to the new current address

    # 7. Payouts signed with the new epoch's keys: the held one re-signed, and a new one.
    fresh = pay(runtime, "after rotation")
    runtime.tick()
    runtime.tick()
    with runtime.db.read() as uow:
        s = uow.session
        rows = [s.get(Withdrawal, w) for w in (held, fresh)]
        txs = [s.get(ChainTransaction, r.transaction_id) for r in rows if r is not None]
    assert all(r is not None and r.status == "broadcast" for r in rows)
    for tx in txs:
        assert tx is not None and input_epochs(runtime, tx.raw_tx) == {2}
    assert txs[0] is not None and txs[0].replaces_id == voided.id
    assert voided.txid not in embedded(runtime).mempool_txids()
    elapsed = time.monotonic() - started
    print(f"\nrotation drill: {elapsed:.1f} s on {runtime.db.dialect}")


def test_deposit_to_retired_address_is_flagged_and_swept(
    client: TestClient, runtime: Runtime, team: Team
) -> None:
    runtime.settings.auto_sweep = False
    with_cold(runtime)
    fund_wallet(runtime, blocks=101)
    with runtime.db.read() as uow:
        s = uow.session
        old = current_address(uow, wallet_row(runtime))
    rotate_with_quorum(client, team, "scheduled rotation")
    runtime.tick()
    embedded(runtime).mine(1, external_destination("pool")[1])
    runtime.tick()  # the first rotation sweep is confirmed
    # Someone still mines to the old address.
    chain = embedded(runtime)
    chain.mine(1, bytes.fromhex(old.script_pubkey))
    runtime.tick()
    flagged = audit_events(runtime.db, "deposit.to_retired_address")
    assert [e.data["address"] for e in flagged] == [old.address]
    late_txid = flagged[0].data["txid"]
    chain.mine(100, external_destination("pool")[1])  # coinbase maturity
    runtime.tick()
    with runtime.db.read() as uow:
        s = uow.session
        coin = s.scalar(select(Utxo).where(Utxo.txid == late_txid))
        assert coin is not None and coin.reserved_by is not None
        sweep_tx = s.get(ChainTransaction, coin.reserved_by)
    assert sweep_tx is not None and sweep_tx.kind == "sweep"
    chain.mine(1, external_destination("pool")[1])
    runtime.tick()
    swept = decode_tx(mined_tx(runtime, sweep_tx.txid))
    assert (late_txid, 0) in {(b2lx(i.prevout.hash), i.prevout.n) for i in swept.vin}
    outs = [script_to_address(bytes(o.scriptPubKey), Network.REGTEST) for o in swept.vout]
    # Old coinbases maturing block by block were swept on the passes before: a later index.
    assert len(outs) == 1 and outs[0] in {cold_address(i) for i in range(1, 20)}


def rotation_state(client: TestClient, tokens: Tokens) -> dict[str, Any]:
    shown = client.get(f"/v1/wallets/{WALLET}/rotations", headers=auth(tokens.all))
    assert shown.status_code == 200, shown.text
    return shown.json()  # type: ignore[no-any-return]


def old_coinbase_heights(runtime: Runtime) -> dict[tuple[str, int], int]:
    """Every unspent epoch-1 coinbase and the block it was mined in, read from the database."""
    with runtime.db.read() as uow:
        rows = uow.session.execute(
            select(Utxo.txid, Utxo.vout, Utxo.block_height)
            .join(Address, Address.id == Utxo.address_id)
            .where(Address.epoch == 1, Utxo.is_coinbase, Utxo.spent_by_txid.is_(None))
        ).all()
    return {(txid, vout): height for txid, vout, height in rows}


def test_immature_old_coinbases_are_reported_and_swept_as_they_mature(
    client: TestClient, runtime: Runtime, tokens: Tokens, team: Team
) -> None:
    runtime.settings.auto_sweep = False
    with_cold(runtime)
    fund_wallet(runtime)  # coinbases at heights 1-110 to epoch 1: 1-11 mature at tip 110
    chain = embedded(runtime)
    pool = external_destination("pool")[1]
    rotation_id = rotate_with_quorum(client, team, "hot seed may be exposed")["id"]
    runtime.tick()  # sweeps the mature ones
    chain.mine(1, pool)  # tip 111: the coinbase of height 12 has 100 confirmations
    runtime.tick()

    # The coinbases of heights 13-110 are still on the old key, each with its maturity height.
    state = rotation_state(client, tokens)
    immature = old_coinbase_heights(runtime)
    assert state["old_epoch_coins_left"] == 0
    assert state["old_epoch_immature_coins_left"] == 98 == len(immature) - 1
    assert state["old_epoch_immature_sat_left"] == 98 * 50 * 100_000_000
    listed = {
        (c["txid"], c["vout"]): c["matures_at_height"] for c in state["old_epoch_immature_coins"]
    }
    # A coinbase mined at height h has 100 confirmations at tip h + 99.
    expected = {k: h + 99 for k, h in immature.items() if h > 12}
    assert listed == expected
    assert [c["matures_at_height"] for c in state["old_epoch_immature_coins"]] == list(
        range(112, 210)
    )

    detail = client.get(f"/v1/rotations/{rotation_id}", headers=auth(tokens.all))
    assert detail.status_code == 200, detail.text
    assert {k: v for k, v in detail.json().items() if k.startswith("old_epoch")} == {
        k: v for k, v in state.items() if k.startswith("old_epoch")
    }

    # The operator's CLI shows the same (JSON on stdout, the unfreeze gate on stderr).
    shown = run_cli(runtime.settings, "rotate", "--wallet", WALLET, "--status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["old_epoch_immature_coins"] == state["old_epoch_immature_coins"]
    assert "98 immature coinbases (490000000000 sat)" in shown.stderr
    assert "maturing at heights 112-209" in shown.stderr

    # Mining to each maturity height sweeps exactly the coins maturing there at once, at the
    # rotation fee; the sweep is in the next block. Block by block at both ends, and a run of
    # blocks mined at once in between (their coins all go on the pass after it).
    previous, last = "", 111
    for tip in [*range(112, 116), 204, *range(205, 210)]:
        chain.mine(tip - last, pool)
        assert chain.tip().height == tip
        if previous:
            mined_tx(runtime, previous)
        runtime.tick()
        maturing = {k for k, h in expected.items() if last < h <= tip}
        previous, last = swept_by_one_rotation_sweep(runtime, maturing), tip
        left = rotation_state(client, tokens)
        assert left["old_epoch_coins_left"] == 0
        assert left["old_epoch_immature_coins_left"] == 209 - tip  # zero only once all swept
    chain.mine(1, pool)
    mined_tx(runtime, previous)
    runtime.tick()
    final = rotation_state(client, tokens)
    assert final["old_epoch_immature_coins_left"] == 0 and final["old_epoch_immature_coins"] == []
    assert final["old_epoch_sat_left"] == 0 == final["old_epoch_immature_sat_left"]
    assert old_coinbase_heights(runtime) == {}


def swept_by_one_rotation_sweep(runtime: Runtime, coins: set[tuple[str, int]]) -> str:
    """The txid of the rotation sweep in the mempool spending exactly ``coins`` to cold."""
    with runtime.db.read() as uow:
        s = uow.session
        reserved = {s.scalar(select(Utxo.reserved_by).where(Utxo.txid == t)) for t, _ in coins}
        assert len(reserved) == 1 and None not in reserved, "one sweep, at once"
        sweep = s.get(ChainTransaction, reserved.pop())
    assert sweep is not None and sweep.kind == "sweep"
    assert sweep.txid in embedded(runtime).mempool_txids()
    assert sweep.fee_rate_sat_per_vb >= runtime.settings.rotation_sweep_min_fee_rate
    tx = decode_tx(sweep.raw_tx)
    assert {(b2lx(i.prevout.hash), i.prevout.n) for i in tx.vin} == coins
    outs = [script_to_address(bytes(o.scriptPubKey), Network.REGTEST) for o in tx.vout]
    assert len(outs) == 1 and outs[0] in {cold_address(i) for i in range(1, 20)}
    return sweep.txid
