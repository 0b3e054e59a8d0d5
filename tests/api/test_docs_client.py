"""docs/api.md's Python, run as written: the payout engine's client against a live server on
loopback, and the webhook signature check against a real delivery."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import external_destination, live_server
from tests.webhooks.receiver import ManualClock, loopback_receiver
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.webhooks.dispatcher import WebhookDispatcher
from walletsvc.webhooks.signatures import HEADER

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DEST, _ = external_destination("documented miner")


def python_block_after(marker: str) -> dict[str, Any]:
    """The first ```python block after ``marker`` in docs/api.md, executed; its names."""
    text = API_MD.read_text().split(marker, 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    names: dict[str, Any] = {}
    exec(compile(code, str(API_MD), "exec"), names)
    return names


def test_the_documented_client_pays_once_previews_and_polls(
    runtime: Runtime, tokens: Tokens
) -> None:
    client_class = python_block_after("A short client (httpx):")["Walletsvc"]
    with live_server(create_app(runtime.settings, runtime=runtime)) as server:
        engine = client_class(server.url, tokens.all)
        assert engine.preview(WALLET, DEST, 150_000)["outcome"] == "allow"
        first = engine.pay(WALLET, DEST, 150_000, "round-9/miner-1")
        again = engine.pay(WALLET, DEST, 150_000, "round-9/miner-1")
        assert first["id"] == again["id"]
        assert first["status"] == "approved"
        changed = engine.changed_since(first["created_at"])
        assert [w["id"] for w in changed] == [first["id"]]


def test_the_documented_verification_accepts_a_real_delivery(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    verify = python_block_after("refuse old\ntimestamps (replays):")["verify"]
    # The documented check compares with the real clock (300 s either side): sign with it.
    clock = ManualClock()
    with loopback_receiver(200) as receiver:
        hook = client.post(
            "/v1/webhooks", headers=auth(tokens.all), json={"url": receiver.url}
        ).json()
        client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": "drill"})
        clock.now = datetime.now(UTC)
        WebhookDispatcher(runtime.db, runtime.webhook_secrets, clock=clock).run_once()
    [got] = receiver.received
    assert verify(hook["secret"], got.headers[HEADER], got.body)
    assert not verify(hook["secret"], got.headers[HEADER], got.body + b" ")
