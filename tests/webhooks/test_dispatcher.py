"""Webhook delivery against a real HTTP receiver on loopback: signatures, the retry schedule
(driven by an injected clock, never by sleeping), giving up, replays, filters, revocation."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import external_destination, request_payout
from tests.webhooks.receiver import ManualClock, loopback_receiver
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models_webhooks import OutboxEvent, Webhook
from walletsvc.webhooks.dispatcher import RetrySchedule, WebhookDispatcher
from walletsvc.webhooks.signatures import HEADER, verify

DEST, _ = external_destination("webhook miner")


def register(client: TestClient, token: str, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", headers=auth(token), json={"url": url, **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def dispatcher(runtime: Runtime, clock: ManualClock, **schedule: Any) -> WebhookDispatcher:
    return WebhookDispatcher(
        runtime.db, runtime.webhook_secrets, clock=clock, schedule=RetrySchedule(**schedule)
    )


def deliveries(client: TestClient, token: str, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=auth(token))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def test_a_payout_reaches_the_receiver_signed(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    clock = ManualClock()
    with loopback_receiver(200) as receiver:
        hook = register(client, tokens.all, receiver.url)
        payout = request_payout(client, tokens.all, key="w-1", destination=DEST, reference="r-9")
        assert payout.status_code == 201, payout.text
        report = dispatcher(runtime, clock).run_once()

    assert report.delivered == 1
    [got] = receiver.received
    event = got.json()
    assert event["type"] == "withdrawal.status_changed"
    assert event["data"] == {
        "withdrawal_id": payout.json()["id"],
        "reference": "r-9",
        "amount_sat": payout.json()["amount_sat"],
        "status": "approved",
        "previous_status": None,
    }
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Walletsvc-Event-Type"] == "withdrawal.status_changed"
    header = got.headers[HEADER]
    stamp = int(clock.now.timestamp())
    assert header.startswith(f"t={stamp},v1=")
    assert verify(hook["secret"], header, got.body, now=stamp)
    # Any change to the body, the secret or a stale timestamp fails the check.
    assert not verify(hook["secret"], header, got.body.replace(b"r-9", b"r-8"), now=stamp)
    assert not verify("whsec_other", header, got.body, now=stamp)
    assert not verify(hook["secret"], header, got.body, now=stamp + 301)
    [logged] = deliveries(client, tokens.all, hook["id"])
    assert logged["status"] == "delivered"
    assert logged["attempts"] == 1
    assert logged["last_status_code"] == 200
    assert logged["event_id"] == event["id"]


def test_failures_are_retried_on_the_exponential_schedule(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    clock = ManualClock()
    sender = dispatcher(runtime, clock, max_attempts=5, base_s=10, cap_s=3600)
    with loopback_receiver(500, 502, 200) as receiver:
        hook = register(client, tokens.all, receiver.url)
        request_payout(client, tokens.all, key="w-2", destination=DEST)
        seen = []
        for step in (0, 9, 1, 19, 1):  # due at t=0, then 10 s later, then 20 s after that
            clock.advance(step)
            sender.run_once()
            seen.append(len(receiver.received))
    assert seen == [1, 1, 2, 2, 3]  # t=0: 500; t=9: not due; t=10: 502; t=29: not due; t=30: 200
    assert len({r.json()["id"] for r in receiver.received}) == 1  # one event, three attempts
    [logged] = deliveries(client, tokens.all, hook["id"])
    assert logged["status"] == "delivered"
    assert logged["attempts"] == 3
    assert logged["last_status_code"] == 200
    assert logged["last_error"] is None


def test_schedule_is_deterministic_and_capped() -> None:
    schedule = RetrySchedule(max_attempts=10, base_s=10, cap_s=100)
    delays = [schedule.delay_after(n).total_seconds() for n in range(1, 7)]
    assert delays == [10, 20, 40, 80, 100, 100]


def test_attempts_run_out_then_an_operator_replays(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    clock = ManualClock()
    sender = dispatcher(runtime, clock, max_attempts=2, base_s=5)
    with loopback_receiver(503) as receiver:
        hook = register(client, tokens.all, receiver.url)
        request_payout(client, tokens.all, key="w-3", destination=DEST)
        sender.run_once()
        clock.advance(5)
        assert sender.run_once().failed == 1
        clock.advance(3600)
        assert sender.run_once().delivered == 0  # given up: no third attempt
        assert len(receiver.received) == 2
        [failed] = deliveries(client, tokens.all, hook["id"])
        assert (failed["status"], failed["attempts"]) == ("failed", 2)
        assert failed["last_error"] == "HTTP 503"

        replay = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/replay", headers=auth(tokens.all)
        )
        assert replay.status_code == 202, replay.text
        assert replay.json()["replay_of"] == failed["id"]
        receiver.answer(200)
        assert sender.run_once().delivered == 1

    first, *_, last = receiver.received
    assert first.body == last.body  # the same event, byte for byte
    log = deliveries(client, tokens.all, hook["id"])
    assert sorted(d["status"] for d in log) == ["delivered", "failed"]


def test_a_receiver_that_is_down_is_logged_and_retried(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    clock = ManualClock()
    with loopback_receiver(200) as receiver:
        url = receiver.url
    # The server is gone: nothing listens on that port any more.
    hook = register(client, tokens.all, url)
    request_payout(client, tokens.all, key="w-4", destination=DEST)
    assert dispatcher(runtime, clock).run_once().retrying == 1
    [logged] = deliveries(client, tokens.all, hook["id"])
    assert logged["status"] == "pending"
    assert logged["last_error"] == "ConnectError"
    assert logged["last_status_code"] is None


def test_event_type_filter_and_audited_events(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    clock = ManualClock()
    with loopback_receiver(200) as receiver:
        register(client, tokens.all, receiver.url, event_types=["freeze.applied"])
        request_payout(client, tokens.all, key="w-5", destination=DEST)
        frozen = client.post(
            "/v1/freeze", headers=auth(tokens.all), json={"reason": "drill", "scope": "all"}
        )
        assert frozen.status_code == 201, frozen.text
        dispatcher(runtime, clock).run_once()
    [got] = receiver.received
    event = got.json()
    assert event["type"] == "freeze.applied"
    assert event["data"]["subject_id"] == frozen.json()["id"]
    assert event["data"]["data"]["reason"] == "drill"


def test_a_revoked_tokens_webhooks_receive_nothing(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    from walletsvc.governance.tokens import create_token, revoke_token

    made = create_token(runtime.db, runtime.tags, name="leaver", scopes=["webhooks"], actor="t")
    with loopback_receiver(200) as receiver:
        register(client, made.secret, receiver.url)
        revoke_token(runtime.db, runtime.tags, token_id=made.token_id, actor="t")
        request_payout(client, tokens.all, key="w-6", destination=DEST)
        report = dispatcher(runtime, ManualClock()).run_once()
    assert report.fanned_out == 0
    assert receiver.received == []


def test_an_event_exists_only_if_its_change_committed(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError), runtime.db.write() as uow:
        uow.emit("round.status_changed", {"round_id": "r-1", "status": "approved"})
        raise RuntimeError("the change fails")
    with runtime.db.write() as uow:
        uow.emit("round.status_changed", {"round_id": "r-2", "status": "approved"})
    with runtime.db.read() as uow:
        rows = uow.session.scalars(select(OutboxEvent)).all()
    assert [r.payload["round_id"] for r in rows] == ["r-2"]


def test_unknown_event_types_are_refused_at_emit(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"), runtime.db.write() as uow:
        uow.emit("no.such.event", {})


def test_the_secret_is_stored_only_sealed(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    hook = register(client, tokens.all, "https://pool.example/hook")
    with runtime.db.read() as uow:
        stored = uow.session.get(Webhook, hook["id"])
        assert stored is not None
        assert hook["secret"] not in stored.secret_sealed
        assert runtime.webhook_secrets.unseal(hook["id"], stored.secret_sealed) == hook["secret"]
    listed = client.get("/v1/webhooks", headers=auth(tokens.all)).json()["webhooks"]
    assert [w["id"] for w in listed] == [hook["id"]]
    assert "secret" not in listed[0]


def test_an_accepted_round_reaches_the_receiver_with_its_payouts(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    miners = [external_destination(f"webhook round miner {i}")[0] for i in range(3)]
    body = {
        "wallet": WALLET,
        "reference": "pplns 9",
        "payouts": [
            {"destination": d, "amount_sat": 60_000 + i, "reference": f"m-{i}"}
            for i, d in enumerate(miners)
        ],
    }
    with loopback_receiver(200) as receiver:
        register(client, tokens.all, receiver.url, event_types=["round.status_changed"])
        accepted = client.post("/v1/payout-rounds", json=body, headers=auth(tokens.all, "rd-1"))
        assert accepted.status_code == 201, accepted.text
        dispatcher(runtime, ManualClock()).run_once()
    [got] = receiver.received
    event = got.json()
    assert event["type"] == "round.status_changed"
    assert event["data"]["round_id"] == accepted.json()["id"]
    assert event["data"]["status"] == "accepted"
    assert event["data"]["total_sat"] == sum(p["amount_sat"] for p in body["payouts"])
    assert [(p["reference"], p["status"]) for p in event["data"]["payouts"]] == [
        ("m-0", "approved"),
        ("m-1", "approved"),
        ("m-2", "approved"),
    ]
