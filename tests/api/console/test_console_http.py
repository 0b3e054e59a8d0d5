"""The console over real HTTP (no browser): log in, decide, freeze, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.api.console.helpers import csrf_of, log_in
from tests.governance_helpers import PASSWORD, Team, big_withdrawal
from walletsvc.api.console.security import (
    CONTENT_SECURITY_POLICY,
    SESSION_COOKIE,
    csrf_for_session,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.governance.approvals import show_request
from walletsvc.governance.sessions import login
from walletsvc.incident.freeze import freeze_overview
from walletsvc.payouts.intake import show_withdrawal


@pytest.fixture
def team(funded: Runtime) -> Team:
    team = Team(funded)
    team.add("alice")
    team.add("bob")
    return team


def _request_of(runtime: Runtime, payout_id: str) -> str:
    request_id = show_withdrawal(runtime.db, payout_id)["approval_request_id"]
    assert isinstance(request_id, str)
    return request_id


def _decide(
    client: TestClient,
    page: str,
    request_id: str,
    *,
    totp: str,
    digest: str | None = None,
    decision: str = "approve",
    csrf: str | None = None,
) -> tuple[int, str]:
    shown = digest if digest is not None else _digest_in(page, request_id)
    data = {"decision": decision, "digest": shown, "totp": totp}
    if csrf != "":
        data["csrf_token"] = csrf or csrf_of(page)
    response = client.post(f"/console/approvals/{request_id}", data=data)
    return response.status_code, response.text


def _digest_in(page: str, request_id: str) -> str:
    form = page.split(f'action="/console/approvals/{request_id}"', 1)[1]
    return form.split('name="digest" value="', 1)[1].split('"', 1)[0]


def test_two_approvers_release_a_payout_in_the_console(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    payout_id = big_withdrawal(runtime)
    request_id = _request_of(runtime, payout_id)

    page = log_in(client, team.members["alice"])
    # Everything needed to decide is on the page: destination, amount, the rule trace, the
    # quorum, the expiry and the digest that is approved.
    for shown in ("20,000,000 sat", "approval_tier", "2 of group treasury", "Expires"):
        assert shown in page
    assert (
        _digest_in(page, request_id) == show_request(runtime.db, runtime.tags, request_id)["digest"]
    )
    status, after = _decide(client, page, request_id, totp=team.members["alice"].live_code())
    assert status == 200, after
    assert "You approved request" in after and "pending" in after
    assert f"request-{request_id}" not in after  # no longer waiting for alice

    client.cookies.clear()
    page = log_in(client, team.members["bob"])
    status, after = _decide(client, page, request_id, totp=team.members["bob"].live_code())
    assert status == 200, after
    assert "it is now approved" in after
    runtime.tick()
    assert show_withdrawal(runtime.db, payout_id)["status"] in ("signed", "broadcast")


def test_pages_are_served_with_strict_headers_and_secure_cookies(
    client: TestClient, team: Team
) -> None:
    form = client.get("/console/login")
    assert form.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "<script>" not in form.text  # no inline script: the CSP would block it anyway
    for label in ("Username", "Password", "TOTP code"):
        assert f">{label}</label>" in form.text
    member = team.members["alice"]
    response = client.post(
        "/console/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "totp": member.live_code(),
            "csrf_token": csrf_of(form.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = client.get("/console/wallets")
    assert page.status_code == 200
    assert "Ceiling" in page.text and "Floor" in page.text
    # The session secret never appears in a page, only in its HttpOnly cookie.
    assert client.cookies.get(SESSION_COOKIE) not in page.text


def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    request_id = _request_of(runtime, big_withdrawal(runtime))
    page = log_in(client, team.members["alice"])
    status, answer = _decide(
        client, page, request_id, totp=team.members["alice"].live_code(), csrf=""
    )
    assert status == 403 and "security token" in answer
    status, answer = _decide(
        client, page, request_id, totp=team.members["alice"].live_code(), csrf="0" * 64
    )
    assert status == 403
    assert show_request(runtime.db, runtime.tags, request_id)["decisions"] == []
    frozen = client.post("/console/freeze", data={"reason": "csrf test"})
    assert frozen.status_code == 403
    assert freeze_overview(runtime.db)["frozen"] is False
    # The login form needs its own token too (a forged cross-site login is refused).
    member = team.members["bob"]
    client.cookies.clear()
    forged = client.post(
        "/console/login",
        data={"username": "bob", "password": PASSWORD, "totp": member.live_code()},
    )
    assert forged.status_code == 403 and SESSION_COOKIE not in forged.cookies


def test_an_expired_session_is_refused(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    request_id = _request_of(runtime, big_withdrawal(runtime))
    alice = team.members["alice"]
    # A session that ended its life a second ago (made at a past moment, with that moment's
    # code); its CSRF token is right, so only the expiry can refuse it.
    past = datetime.now(UTC) - timedelta(seconds=runtime.settings.session_ttl_s + 1)
    expired = login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username="alice",
        password=PASSWORD,
        totp=alice.code_at(past),
        now=past,
    )
    client.cookies.set(SESSION_COOKIE, expired.token, path="/console")
    shown = client.get("/console/queue", follow_redirects=False)
    assert shown.status_code == 303 and shown.headers["location"].startswith("/console/login")
    csrf = csrf_for_session(expired.token)
    digest = show_request(runtime.db, runtime.tags, request_id)["digest"]
    status, answer = _decide(
        client, "", request_id, totp=alice.live_code(), csrf=csrf, digest=digest
    )
    assert status == 401 and "expired" in answer
    assert show_request(runtime.db, runtime.tags, request_id)["decisions"] == []
    assert client.post("/console/freeze", data={"reason": "x", "csrf_token": csrf}).status_code == (
        401
    )
    assert freeze_overview(runtime.db)["frozen"] is False


def test_a_replayed_totp_code_is_refused(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    first = _request_of(runtime, big_withdrawal(runtime, key="one"))
    second = _request_of(runtime, big_withdrawal(runtime, key="two", amount=20_000_001))
    alice = team.members["alice"]
    page = log_in(client, alice)
    code = alice.live_code()
    status, _ = _decide(client, page, first, totp=code)
    assert status == 200
    status, answer = _decide(client, page, second, totp=code)
    assert status == 403
    assert "already used" in answer
    assert show_request(runtime.db, runtime.tags, second)["decisions"] == []


def test_an_approval_of_another_digest_is_refused(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    request_id = _request_of(runtime, big_withdrawal(runtime))
    page = log_in(client, team.members["alice"])
    status, answer = _decide(
        client, page, request_id, totp=team.members["alice"].live_code(), digest="ab" * 32
    )
    assert status == 409
    assert "review the request again" in answer and "digest" in answer
    assert show_request(runtime.db, runtime.tags, request_id)["decisions"] == []


def test_freeze_from_any_page_shows_the_banner_everywhere(client: TestClient, team: Team) -> None:
    page = log_in(client, team.members["alice"])
    frozen = client.post(
        "/console/freeze", data={"reason": "suspicious payouts", "csrf_token": csrf_of(page)}
    )
    assert frozen.status_code == 201
    assert freeze_overview(team.runtime.db)["frozen"] is True
    for path in ("/console/queue", "/console/wallets", "/console/payouts", "/console/policy"):
        shown = client.get(path)
        assert 'id="freeze-banner"' in shown.text and "suspicious payouts" in shown.text
    empty = client.post("/console/freeze", data={"reason": " ", "csrf_token": csrf_of(page)})
    assert empty.status_code == 422 and "reason" in empty.text


def test_unfreeze_by_quorum_lists_the_payouts_that_were_held(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    held = big_withdrawal(runtime, amount=5_000_000, key="small")  # below the tiers: approved
    page = log_in(client, team.members["alice"])
    frozen = client.post("/console/freeze", data={"reason": "drill", "csrf_token": csrf_of(page)})
    assert frozen.status_code == 201
    runtime.tick()  # the worker's pass signs nothing while frozen
    assert show_withdrawal(runtime.db, held)["status"] == "approved"
    freeze_page = client.get("/console/freeze").text
    assert held in freeze_page  # shown as held
    team.add("carol")
    asked = client.post(
        "/console/unfreeze", data={"reason": "drill over", "csrf_token": csrf_of(page)}
    )
    assert asked.status_code == 201, asked.text
    request_id = asked.text.split("Unfreeze requested (", 1)[1].split(")", 1)[0]
    for name in ("bob", "carol"):
        client.cookies.clear()
        queue = log_in(client, team.members[name])
        status, answer = _decide(client, queue, request_id, totp=team.members[name].live_code())
        assert status == 200, answer
    assert "it is now approved" in answer
    assert "Payouts that were held by the freeze" in answer and held in answer
    assert 'id="freeze-banner"' not in answer
    assert freeze_overview(runtime.db)["frozen"] is False


def test_an_auditor_may_freeze_but_not_ask_for_the_unfreeze(client: TestClient, team: Team) -> None:
    audrey = team.add("audrey", role="auditor", groups=())
    page = log_in(client, audrey)
    frozen = client.post(
        "/console/freeze", data={"reason": "looks odd", "csrf_token": csrf_of(page)}
    )
    assert frozen.status_code == 201
    assert "Request unfreeze" not in frozen.text
    refused = client.post("/console/unfreeze", data={"reason": "fine", "csrf_token": csrf_of(page)})
    assert refused.status_code == 403
    assert "Unfreeze requested" not in refused.text
    assert freeze_overview(team.runtime.db)["frozen"] is True
