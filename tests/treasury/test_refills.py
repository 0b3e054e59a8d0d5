"""Refills from cold storage with a PSBT: proposed by the service, signed by a stand-in
hardware wallet (embit, holding the cold xprvs the test made), combined, verified by the
kernel, broadcast, and credited to the hot wallet by the scanner. Thresholds from the default
policy: target 2 BTC, floor 0.5 BTC; the hot wallet starts empty, so below its floor."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from embit import bip32, script
from embit.networks import NETWORKS
from embit.psbt import PSBT, OutputScope
from embit.transaction import TransactionOutput
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import audit_actions, dev_chain, verify_audit, wallet_balances
from tests.treasury.cold_wallets import COLD, Cold, pay_cold, root, single_key, two_of_three
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.db.models_treasury import Refill
from walletsvc.domain.address import script_to_address
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SpentOutput
from walletsvc.treasury.cold import set_initial_cold_destination

REGTEST = NETWORKS["regtest"]
TARGET = 200_000_000
COIN = 150_000_000  # two of these in cold storage: a refill of 2 BTC spends both


def with_cold_coins(runtime: Runtime, cold: Cold) -> None:
    set_initial_cold_destination(
        runtime.db, runtime.tags, wallet=WALLET, text=cold.descriptor, actor="test"
    )
    pay_cold(runtime, [(cold.script(0), COIN), (cold.script(1), COIN)])


def propose(client: TestClient, tokens: Tokens) -> dict[str, Any]:
    response = client.post(f"/v1/wallets/{WALLET}/refills", headers=auth(tokens.all))
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def upload(client: TestClient, tokens: Tokens, refill_id: str, psbt: PSBT | str) -> Any:
    text = psbt if isinstance(psbt, str) else psbt.to_string()
    return client.post(
        f"/v1/refills/{refill_id}/signatures", json={"psbt": text}, headers=auth(tokens.all)
    )


def signed_by(view: dict[str, Any], signer: bip32.HDKey) -> PSBT:
    """What a hardware wallet returns: the proposal with its signatures added."""
    psbt = PSBT.from_string(view["psbt"])
    assert psbt.sign_with(signer) == len(psbt.inputs)
    return psbt


# --- the round trip, on the embedded chain -----------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("kind", sorted(COLD))
def test_refill_round_trip(client: TestClient, runtime: Runtime, tokens: Tokens, kind: str) -> None:
    cold = COLD[kind]()
    chain = dev_chain(runtime)
    with_cold_coins(runtime, cold)
    assert wallet_balances(client, tokens.all)["confirmed_sat"] == 0  # below the floor

    view = propose(client, tokens)
    assert view["status"] == "awaiting_signatures" and not view["complete"]
    assert view["amount_sat"] == TARGET and view["cold_balance_sat"] == 2 * COIN
    assert len(view["inputs"]) == 2 and view["signatures"] == [0, 0]
    assert view["change_sat"] == 2 * COIN - TARGET - view["fee_sat"] > 0

    # What a hardware wallet reads: coins, scripts and key origins it can check on its own.
    psbt = PSBT.from_string(view["psbt"])
    assert psbt.tx.txid().hex() == view["txid"]
    for scope in psbt.inputs:
        assert scope.witness_utxo.script_pubkey.data in (cold.script(0), cold.script(1))
        fingerprints = {d.fingerprint for d in scope.bip32_derivations.values()}
        assert fingerprints == {s.my_fingerprint for s in cold.signers}
        assert (scope.witness_script is not None) == (kind == "2-of-3")
    outs = {o.script_pubkey.data: o.value for o in psbt.outputs}
    hot_script = script.address_to_scriptpubkey(view["hot_address"]).data
    assert outs == {hot_script: TARGET, cold.script(2): view["change_sat"]}
    change_scope = next(o for o in psbt.outputs if o.script_pubkey.data == cold.script(2))
    assert len(change_scope.bip32_derivations) == len(cold.signers)  # change is recognisable

    # Each key holder signs the proposal on their own device and uploads it.
    for n, signer in enumerate(cold.signers[: cold.needed], start=1):
        response = upload(client, tokens, view["id"], signed_by(view, signer))
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["signatures"] == [n, n]
        if n < cold.needed:
            assert body["status"] == "awaiting_signatures" and not body["complete"]
            assert view["txid"] not in chain.mempool_txids()
    assert body["status"] == "broadcast" and body["complete"]
    assert view["txid"] in chain.mempool_txids()

    # The kernel accepts the broadcast transaction (again, outside the service) ...
    raw = chain.get_transaction(view["txid"])  # type: ignore[union-attr]
    assert raw is not None
    spent = [SpentOutput(cold.script(i), COIN) for i in (0, 1)]
    KernelScriptVerifier().verify_transaction(raw, spent)
    # ... and a block with it; the scanner credits the hot wallet and the new cold change.
    chain.mine(1)
    runtime.scanner.sync()
    assert wallet_balances(client, tokens.all)["confirmed_sat"] == TARGET
    final = client.get(f"/v1/refills/{view['id']}", headers=auth(tokens.all)).json()
    assert final["status"] == "confirmed" and final["cold_balance_sat"] == view["change_sat"]
    assert script_to_address(hot_script, Network.REGTEST) == view["hot_address"]
    assert {"refill.proposed", "refill.signed", "refill.broadcast", "refill.confirmed"} <= set(
        audit_actions(runtime.db)
    )


# --- refusals (the in-memory chain) ------------------------------------------------------------
def _change_output(psbt: PSBT) -> None:
    psbt.outputs[0].script_pubkey = script.p2wpkh(root("attacker").key)


def _raise_output(psbt: PSBT) -> None:
    psbt.outputs[0].value += 10_000


def _add_output(psbt: PSBT) -> None:
    attacker = TransactionOutput(10_000, script.p2wpkh(root("attacker").key))
    psbt.outputs.append(OutputScope(vout=attacker))


def _drop_input(psbt: PSBT) -> None:
    psbt.inputs.pop()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_change_output, "output 0 pays another script"),
        (_raise_output, "output 0 pays"),
        (_add_output, "it adds an output"),
        (_drop_input, "it drops an input"),
    ],
    ids=["changed output", "raised amount", "added output", "dropped input"],
)
def test_a_psbt_that_is_not_the_proposal_is_refused(
    client: TestClient,
    runtime: Runtime,
    tokens: Tokens,
    mutate: Callable[[PSBT], None],
    message: str,
) -> None:
    cold = single_key()
    with_cold_coins(runtime, cold)
    view = propose(client, tokens)
    psbt = PSBT.from_string(view["psbt"])
    mutate(psbt)
    psbt.sign_with(cold.signers[0])  # signed: the device was shown the altered transaction
    response = upload(client, tokens, view["id"], psbt)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "psbt" and message in error["message"]
    after = client.get(f"/v1/refills/{view['id']}", headers=auth(tokens.all)).json()
    assert after == view  # nothing kept: no signature, same PSBT, same status


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        base64.b64encode(b"hello, not a psbt").decode(),
        base64.b64encode(b"psbt\xff\x01\x00\x05garbage").decode(),
    ],
    ids=["not base64", "not a psbt", "malformed psbt"],
)
def test_garbage_is_a_clear_422(
    client: TestClient, runtime: Runtime, tokens: Tokens, text: str
) -> None:
    with_cold_coins(runtime, single_key())
    view = propose(client, tokens)
    response = upload(client, tokens, view["id"], text)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "psbt"
    assert client.get(f"/v1/refills/{view['id']}", headers=auth(tokens.all)).json() == view


def test_a_signature_by_another_key_is_refused(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    cold = two_of_three()
    with_cold_coins(runtime, cold)
    view = propose(client, tokens)
    psbt = signed_by(view, cold.signers[0])
    # Move the first input's signature under another of the multisig's keys.
    scope = psbt.inputs[0]
    (pub, sig), *_ = scope.partial_sigs.items()
    other = next(k for k in scope.bip32_derivations if k != pub)
    scope.partial_sigs = {other: sig}
    response = upload(client, tokens, view["id"], psbt)
    assert response.status_code == 422
    assert "input 0 has a signature that does not verify" in response.json()["error"]["message"]


def test_no_refill_above_the_floor_or_without_cold_coins(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    response = client.post(f"/v1/wallets/{WALLET}/refills", headers=auth(tokens.all))
    assert response.status_code == 409  # no cold destination yet
    set_initial_cold_destination(
        runtime.db, runtime.tags, wallet=WALLET, text=single_key().descriptor, actor="test"
    )
    response = client.post(f"/v1/wallets/{WALLET}/refills", headers=auth(tokens.all))
    assert response.status_code == 409
    assert "cold storage holds 0 sat" in response.json()["error"]["message"]
    pay_cold(runtime, [(single_key().script(0), COIN), (single_key().script(1), COIN)])
    view = propose(client, tokens)
    again = client.post(f"/v1/wallets/{WALLET}/refills", headers=auth(tokens.all))
    assert again.status_code == 409 and view["id"] in again.json()["error"]["message"]


def test_a_cancelled_refill_frees_its_cold_coins(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    cold = single_key()
    with_cold_coins(runtime, cold)
    first = propose(client, tokens)
    cancelled = client.post(f"/v1/refills/{first['id']}/cancel", headers=auth(tokens.all))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    late = upload(client, tokens, first["id"], signed_by(first, cold.signers[0]))
    assert late.status_code == 409  # a cancelled refill takes no signatures
    second = propose(client, tokens)  # the same coins, offered again
    assert sorted(second["inputs"]) == sorted(first["inputs"])
    assert second["id"] != first["id"]
    again = client.post(f"/v1/refills/{first['id']}/cancel", headers=auth(tokens.all))
    assert again.status_code == 409


@pytest.mark.parametrize("edit", ["amount", "hot address", "tag removed"])
def test_a_refill_edited_in_the_database_is_refused_and_named_by_verify(
    client: TestClient, runtime: Runtime, tokens: Tokens, edit: str
) -> None:
    """A database writer redirects a proposed refill (more from cold, another hot address):
    its row fails its tag, so uploaded signatures are refused (audited) and `audit verify`
    names the row."""
    cold = single_key()
    with_cold_coins(runtime, cold)
    view = propose(client, tokens)
    assert verify_audit(runtime).ok
    thief = script_to_address(bytes([0, 20]) + bytes(range(20)), Network.REGTEST)
    values: dict[str, Any] = {
        "amount": {"amount_sat": view["amount_sat"] + 1},
        "hot address": {"hot_address": thief},
        "tag removed": {"mac": None},
    }[edit]
    with runtime.db.engine.begin() as conn:
        conn.execute(update(Refill).where(Refill.id == view["id"]).values(**values))
    assert f"refill {view['id']} fails its integrity tag" in verify_audit(runtime).problems
    response = upload(client, tokens, view["id"], signed_by(view, cold.signers[0]))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_failure"
    assert "integrity.failure" in audit_actions(runtime.db)
    after = client.get(f"/v1/refills/{view['id']}", headers=auth(tokens.all)).json()
    assert after["status"] == "awaiting_signatures" and after["psbt"] == view["psbt"]


def test_a_refill_inserted_in_the_database_is_named_by_verify(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    with_cold_coins(runtime, single_key())
    view = propose(client, tokens)
    with runtime.db.engine.begin() as conn:  # a copy under a new id, its tag carried over
        row = conn.execute(select(Refill).where(Refill.id == view["id"])).mappings().one()
        copy = {**row, "id": "forged-refill", "txid": "ab" * 32, "status": "cancelled"}
        conn.execute(insert(Refill).values(**copy))
    assert "refill forged-refill fails its integrity tag" in verify_audit(runtime).problems
