"""Driving the console as a browser would: cookies, the CSRF field of the page, form posts."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.governance_helpers import PASSWORD, Member

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def log_in(client: TestClient, member: Member, *, totp: str | None = None) -> str:
    """Log ``member`` in through the login form; returns the queue page's HTML."""
    form = client.get("/console/login")
    assert form.status_code == 200
    response = client.post(
        "/console/login",
        data={
            "username": member.username,
            "password": PASSWORD,
            "totp": totp or member.live_code(),
            "csrf_token": csrf_of(form.text),
        },
    )
    assert response.status_code == 200, response.text
    assert f"{member.username} ({member.role})" in response.text
    return response.text
