"""/metrics for Prometheus: request, policy, signer and webhook counters, and the state
gauges read from the database at scrape time (payouts, approvals, balances, freezes, lag)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.helpers import external_destination, request_payout
from tests.webhooks.receiver import ManualClock, loopback_receiver
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.webhooks.dispatcher import WebhookDispatcher

DEST, _ = external_destination("measured miner")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, path: str = "/metrics") -> Samples:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_and_policy_decisions_are_counted(client: TestClient, tokens: Tokens) -> None:
    before = scrape(client)
    created = request_payout(client, tokens.all, key="m-1", destination=DEST)
    assert created.status_code == 201
    shown = client.get(f"/v1/withdrawals/{created.json()['id']}", headers=auth(tokens.all))
    assert shown.status_code == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    post = {"method": "POST", "route": "/v1/withdrawals", "status": "201"}
    assert delta("walletsvc_http_requests_total", **post) == 1
    # The route's template, never the id.
    one = {"method": "GET", "route": "/v1/withdrawals/{withdrawal_id}", "status": "200"}
    assert delta("walletsvc_http_requests_total", **one) == 1
    assert delta("walletsvc_policy_decisions_total", outcome="allow") == 1
    assert delta("walletsvc_policy_rule_results_total", rule="max_per_payout", result="pass") == 1
    assert not any(created.json()["id"] in str(labels) for _, labels in after)


def test_a_freeze_reports_where_its_time_went(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    before = scrape(client)
    frozen = client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": "drill"})
    assert frozen.status_code == 201
    after = scrape(client)
    name = "walletsvc_freeze_stage_seconds_count"
    # One observation per stage of this freeze (the signer's only when there is a signer).
    stages = ["queued", "authenticate", "gate", "record"]
    stages += ["signer"] if runtime.signer is not None else []
    for stage in stages:
        assert value(after, name, stage=stage) - value(before, name, stage=stage) == 1, stage
    # A rejected freeze (bad credentials) is not a freeze: no stage after authentication.
    refused = client.post("/v1/freeze", headers=auth("wsvc_not-a-token"), json={"reason": "x"})
    assert refused.status_code == 401
    again = scrape(client)
    assert value(again, name, stage="record") == value(after, name, stage="record")


def test_state_gauges_come_from_the_database(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    request_payout(client, tokens.all, key="m-2", destination=DEST)
    # Above the default policy's approval tier: waits for staff.
    big = request_payout(client, tokens.all, key="m-3", destination=DEST, amount_sat=20_000_000)
    assert big.json()["status"] == "pending_approval"
    client.post("/v1/freeze", headers=auth(tokens.all), json={"reason": "drill"})
    fund_wallet(runtime, blocks=101)
    samples = scrape(client)

    assert value(samples, "walletsvc_withdrawals", status="approved") == 1
    assert value(samples, "walletsvc_withdrawals", status="pending_approval") == 1
    assert value(samples, "walletsvc_withdrawals", status="confirmed") == 0
    assert value(samples, "walletsvc_pending_approvals", kind="withdrawal") == 1
    assert value(samples, "walletsvc_frozen", scope="all", wallet="*") == 1
    confirmed = client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()
    assert value(samples, "walletsvc_hot_balance_sat", wallet=WALLET) == float(
        confirmed["balances"]["confirmed_sat"]
    )
    assert value(samples, "walletsvc_hot_balance_sat", wallet=WALLET) > 0
    assert value(samples, "walletsvc_scanner_lag_blocks") == 0
    assert value(samples, "walletsvc_metrics_state_up", source="database") == 1
    # The versioned path serves the same series.
    assert set(scrape(client, "/v1/metrics")) >= {
        key for key in samples if key[0].startswith("walletsvc_withdrawals")
    }


def test_signer_latency_and_webhook_deliveries(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    fund_wallet(runtime)
    with loopback_receiver(200) as receiver:
        client.post("/v1/webhooks", headers=auth(tokens.all), json={"url": receiver.url})
        before = scrape(client)
        request_payout(client, tokens.all, key="m-4", destination=DEST)
        runtime.tick()  # the worker signs and broadcasts it
        WebhookDispatcher(runtime.db, runtime.webhook_secrets, clock=ManualClock()).run_once()
    after = scrape(client)
    signed = value(after, "walletsvc_signer_seconds_count", kind="payout") - value(
        before, "walletsvc_signer_seconds_count", kind="payout"
    )
    assert signed == 1
    delivered = {"event_type": "withdrawal.status_changed", "outcome": "delivered"}
    # approved, then signed, then broadcast: one delivery each
    assert value(after, "walletsvc_webhook_delivery_attempts_total", **delivered) - value(
        before, "walletsvc_webhook_delivery_attempts_total", **delivered
    ) == len(receiver.received)
    assert [r.json()["data"]["status"] for r in receiver.received] == [
        "approved",
        "signed",
        "broadcast",
    ]
