"""The webhook endpoints: who sees what, and bad input answered 422 naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.governance.tokens import create_token


def _token(runtime: Runtime, name: str, scopes: list[str]) -> str:
    return create_token(runtime.db, runtime.tags, name=name, scopes=scopes, actor="test").secret


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://pool.example/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://pool.example/hook"}, "url"),  # plain http off loopback
        ({"url": "https://user:pw@pool.example/hook"}, "url"),
        ({"url": "https://pool.example/hook", "event_types": ["payout.teleported"]}, "event_types"),
        ({"url": "https://pool.example/hook", "extra": 1}, "extra"),
        ({"url": 5}, "url"),
    ],
)
def test_bad_registrations_answer_422_naming_the_field(
    client: TestClient, tokens: Tokens, body: dict[str, object], field: str
) -> None:
    response = client.post("/v1/webhooks", headers=auth(tokens.all), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert client.get("/v1/webhooks", headers=auth(tokens.all)).json() == {"webhooks": []}


def test_a_token_sees_and_changes_only_its_own_webhooks(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    mine = client.post(
        "/v1/webhooks", headers=auth(tokens.all), json={"url": "https://a.example/h"}
    ).json()
    other = _token(runtime, "other engine", ["webhooks"])
    assert client.get("/v1/webhooks", headers=auth(other)).json() == {"webhooks": []}
    for response in (
        client.get(f"/v1/webhooks/{mine['id']}/deliveries", headers=auth(other)),
        client.delete(f"/v1/webhooks/{mine['id']}", headers=auth(other)),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["field"] == "webhook_id"
    removed = client.delete(f"/v1/webhooks/{mine['id']}", headers=auth(tokens.all))
    assert removed.status_code == 204
    assert client.get("/v1/webhooks", headers=auth(tokens.all)).json() == {"webhooks": []}


def test_webhooks_need_the_webhooks_scope(client: TestClient, tokens: Tokens) -> None:
    response = client.post(
        "/v1/webhooks", headers=auth(tokens.read_only), json={"url": "https://a.example/h"}
    )
    assert response.status_code == 403
    assert client.get("/v1/webhooks").status_code == 401


def test_unknown_delivery_is_404(client: TestClient, tokens: Tokens) -> None:
    hook = client.post(
        "/v1/webhooks", headers=auth(tokens.all), json={"url": "https://a.example/h"}
    ).json()
    response = client.post(
        f"/v1/webhooks/{hook['id']}/deliveries/nope/replay", headers=auth(tokens.all)
    )
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "delivery_id"
