"""Deposit addresses over HTTP: issuing, the current one, the listing, and the scanner finding
deposits to issued and look-ahead addresses (derived here independently from the xpub)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import audit_events, count_rows, dev_chain, wallet_balances
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Address, Utxo
from walletsvc.domain.address import decode_address
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import RECEIVE_CHAIN
from walletsvc.keys.hd import AccountXpub
from walletsvc.wallets.service import LOOKAHEAD

BASE = f"/v1/wallets/{WALLET}/deposit-addresses"
SUBSIDY = 50 * 100_000_000


def _xpub(client: TestClient, token: str) -> AccountXpub:
    wallet = client.get(f"/v1/wallets/{WALLET}", headers=auth(token)).json()
    assert wallet["network"] == "regtest" and wallet["current_epoch"] == 1
    return AccountXpub.parse(wallet["account_xpub"], Network.REGTEST)


def test_issue_current_and_list(client: TestClient, runtime: Runtime, tokens: Tokens) -> None:
    xpub = _xpub(client, tokens.all)
    initial = client.get(f"{BASE}/current", headers=auth(tokens.all))
    assert initial.status_code == 200
    assert initial.json()["index"] == 0 and initial.json()["label"] == "initial"

    issued = []
    for label in ("pool A", None, "pool C"):
        response = client.post(BASE, headers=auth(tokens.all), json={"label": label})
        assert response.status_code == 201, response.text
        issued.append(response.json())
    assert [a["index"] for a in issued] == [1, 2, 3]
    assert len({a["address"] for a in issued} | {initial.json()["address"]}) == 4
    for address in issued:
        assert address["address"].startswith("bcrt1q")
        assert address["epoch"] == 1 and address["retired"] is False
        assert address["wallet"] == WALLET
        decoded = decode_address(address["address"], Network.REGTEST)
        assert decoded.script_pubkey == xpub.script_pubkey(RECEIVE_CHAIN, address["index"])
        assert address["address"] == xpub.address(RECEIVE_CHAIN, address["index"])
    assert [a["label"] for a in issued] == ["pool A", None, "pool C"]

    current = client.get(f"{BASE}/current", headers=auth(tokens.read_only))
    assert current.status_code == 200 and current.json() == issued[-1]

    listing = client.get(BASE, headers=auth(tokens.read_only))
    assert listing.status_code == 200
    rows = listing.json()["addresses"]
    assert [r["index"] for r in rows] == [3, 2, 1, 0]  # newest first, issued ones only
    assert all(r["epoch"] == 1 and r["retired"] is False for r in rows)
    page = client.get(BASE, headers=auth(tokens.all), params={"limit": 2, "offset": 1})
    assert [r["index"] for r in page.json()["addresses"]] == [2, 1]

    assert len(audit_events(runtime.db, "address.issued")) == 4


def test_address_errors_and_scopes(client: TestClient, runtime: Runtime, tokens: Tokens) -> None:
    before = count_rows(runtime.db, Address)
    cases = [
        (client.post(BASE, headers=auth(tokens.read_only), json={}), 403, None),
        (client.post(BASE, json={}), 401, None),
        (client.post(BASE, headers=auth(tokens.all), json={"label": "x" * 201}), 422, "label"),
        (client.post(BASE, headers=auth(tokens.all), json={"label": 5}), 422, "label"),
        (client.post(BASE, headers=auth(tokens.all), json={"colour": "red"}), 422, "colour"),
        (
            client.post("/v1/wallets/nope/deposit-addresses", headers=auth(tokens.all), json={}),
            404,
            "wallet",
        ),
        (
            client.get("/v1/wallets/nope/deposit-addresses/current", headers=auth(tokens.all)),
            404,
            "wallet",
        ),
        (client.get(f"{BASE}/current", headers=auth(tokens.create_only)), 403, None),
        (client.get(BASE, headers=auth(tokens.all), params={"limit": 0}), 422, "limit"),
        (client.get("/v1/wallets/nope", headers=auth(tokens.all)), 404, "wallet"),
    ]
    for response, status, field in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["field"] == field, response.text
    assert count_rows(runtime.db, Address) == before
    assert len(audit_events(runtime.db, "address.issued")) == 1


def test_scanner_finds_deposits_to_issued_and_look_ahead_addresses(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = dev_chain(runtime)
    xpub = _xpub(client, tokens.all)
    issued = client.post(BASE, headers=auth(tokens.all), json={"label": "pool"}).json()
    assert issued["index"] == 1
    ahead = issued["index"] + 5  # never handed out: a payer that skipped ahead
    beyond = ahead + LOOKAHEAD  # only watched once `ahead` has been used
    scripts = {
        "issued": xpub.script_pubkey(RECEIVE_CHAIN, issued["index"]),
        "ahead": xpub.script_pubkey(RECEIVE_CHAIN, ahead),
        "beyond": xpub.script_pubkey(RECEIVE_CHAIN, beyond),
    }
    with runtime.db.read() as session:
        watched = set(session.scalars(select(Address.script_pubkey)))
    assert scripts["ahead"].hex() in watched and scripts["beyond"].hex() not in watched

    mined = {name: chain.mine(1, script)[0] for name, script in scripts.items()}
    runtime.scanner.sync()

    with runtime.db.read() as session:
        found = {u.script_pubkey: u for u in session.scalars(select(Utxo).where(Utxo.is_coinbase))}
    for name, script in scripts.items():
        coin = found.get(script.hex())
        assert coin is not None, f"the scanner missed the deposit to the {name} address"
        assert coin.amount_sat == SUBSIDY
        assert coin.block_hash == mined[name]
    seen = {e.data["address"] for e in audit_events(runtime.db, "deposit.seen")}
    assert seen == {xpub.address(RECEIVE_CHAIN, i) for i in (issued["index"], ahead, beyond)}
    balances = wallet_balances(client, tokens.all)
    assert balances["total_sat"] == 3 * SUBSIDY
    # Using an address extends the watched window past it.
    with runtime.db.read() as session:
        highest = max(session.scalars(select(Address.index).where(Address.chain == RECEIVE_CHAIN)))
    assert highest >= beyond + LOOKAHEAD
