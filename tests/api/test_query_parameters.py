"""Query parameters at their edges: each bad one is a 422 naming it, never a 500; the
withdrawal cursor is opaque and URL-safe, and pages through every row exactly once."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import WALLET, SharedApp, auth
from walletsvc.bootstrap.setup import demo_destination


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/audit?after=100000000000000000000000000000", "after"),
        ("/v1/audit?after=-1", "after"),
        (f"/v1/wallets/{WALLET}/deposit-addresses?offset=100000000000000000000000000000", "offset"),
        ("/v1/withdrawals?cursor=2026-11-29T10:00:00_abc", "cursor"),
        (
            "/v1/withdrawals?cursor="
            + base64.urlsafe_b64encode(b"2026-11-29T10:00:00|some-id").decode().rstrip("="),
            "cursor",
        ),
        ("/v1/withdrawals?cursor=%00%ff", "cursor"),
        ("/v1/withdrawals?cursor=bm90IGEgY3Vyc29y", "cursor"),
    ],
)
def test_a_bad_query_parameter_is_a_422_naming_it(
    shared_app: SharedApp, path: str, field: str
) -> None:
    answer = shared_app.client.get(path, headers=auth(shared_app.tokens.all))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_withdrawal_pages_use_url_safe_cursors_and_visit_each_row_once(
    shared_app: SharedApp,
) -> None:
    client, token = shared_app.client, shared_app.tokens.all
    created = set()
    for i in range(5):
        answer = client.post(
            "/v1/withdrawals",
            headers=auth(token, f"cursor-walk-{i}"),
            json={
                "wallet": WALLET,
                "destination": demo_destination(shared_app.runtime.settings.network),
                "amount_sat": 10_000 + i,
            },
        )
        assert answer.status_code in (200, 201), answer.text
        created.add(answer.json()["id"])

    seen: list[str] = []
    cursor = None
    while True:
        # The cursor goes into the URL as it came: no client-side encoding needed.
        url = "/v1/withdrawals?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=auth(token)).json()
        seen.extend(w["id"] for w in page["withdrawals"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert created <= set(seen)
