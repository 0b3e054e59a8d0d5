from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import WALLET, Tokens, auth
from walletsvc.services.runtime import Runtime
from walletsvc.services.setup import demo_destination


def test_smoke(client: TestClient, funded: Runtime, tokens: Tokens) -> None:
    dest = demo_destination(funded.settings.network)
    r = client.post("/v1/withdrawals", headers=auth(tokens.all, "k1"),
                    json={"wallet": WALLET, "destination": dest, "amount_sat": 100_000})
    print(r.json())
    assert r.status_code == 201
    funded.tick()
    funded.chain.mine(1)
    funded.tick()
    r = client.get(f"/v1/withdrawals/{r.json()['id']}", headers=auth(tokens.all))
    print(r.json())
    assert r.json()["status"] == "confirmed"
