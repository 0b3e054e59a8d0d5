"""Rate limits per client: RateLimit-* headers on every answer, 429 in the error shape over
the limit, with the window driven by an injected clock (no sleeping)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth
from walletsvc.api.rate_limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limit(client: TestClient, limit: int) -> Clock:
    clock = Clock()
    client.app.state.rate_limiter = RateLimiter(limit, 60, clock=clock)  # type: ignore[attr-defined]
    return clock


def test_headers_count_down_then_429(client: TestClient, tokens: Tokens) -> None:
    clock = _limit(client, 3)
    remaining = []
    for _ in range(3):
        response = client.get("/v1/wallets", headers=auth(tokens.read_only))
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Reset"] == "60"
        remaining.append(response.headers["RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    clock.now += 15
    refused = client.get("/v1/wallets", headers=auth(tokens.read_only))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["field"] is None
    assert refused.headers["Retry-After"] == "45"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["X-Request-Id"]

    # Another client has its own window; this one's opens again when its window ends.
    assert client.get("/v1/wallets", headers=auth(tokens.all)).status_code == 200
    clock.now += 45
    again = client.get("/v1/wallets", headers=auth(tokens.read_only))
    assert again.status_code == 200
    assert again.headers["RateLimit-Remaining"] == "2"


def test_a_refused_request_is_not_run(client: TestClient, tokens: Tokens) -> None:
    _limit(client, 1)
    assert client.get("/v1/wallets", headers=auth(tokens.all)).status_code == 200
    response = client.post(
        "/v1/freeze", headers=auth(tokens.all), json={"reason": "should not happen"}
    )
    assert response.status_code == 429
    client.app.state.rate_limiter = None  # type: ignore[attr-defined]
    state = client.get("/v1/freeze", headers=auth(tokens.all)).json()
    # The refused freeze was never applied (the rest of the view, e.g. held payouts, is not
    # what this test is about).
    assert (state["frozen"], state["freezes"]) == (False, [])


def test_probes_are_never_limited(client: TestClient) -> None:
    _limit(client, 1)
    for _ in range(3):
        assert client.get("/v1/health").status_code == 200
        assert "RateLimit-Limit" not in client.get("/v1/health").headers


def test_the_default_limit_comes_from_settings(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/wallets", headers=auth(tokens.read_only))
    assert response.headers["RateLimit-Limit"] == "600"
