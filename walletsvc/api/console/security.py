"""The console's browser security: session cookie, CSRF tokens, security headers.

The session is the staff session of the API (walletsvc.governance.sessions), carried in a
cookie instead of an ``Authorization`` header: HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), Secure when the console is served over https.

CSRF: every POST carries a token in a hidden field. With a session, the token is an HMAC of
the session secret (so it is per session, needs no storage, and cannot be made without the
HttpOnly cookie); before login (the login form itself), a random value in its own cookie is
compared with the field (double submit). Both are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import FastAPI, Request, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walletsvc.config import Settings
from walletsvc.domain.errors import Forbidden
from walletsvc.governance.passkeys import RelyingParty

SESSION_COOKIE = "walletsvc_console"
LOGIN_CSRF_COOKIE = "walletsvc_console_login"
CSRF_FIELD = "csrf_token"
CONSOLE_PREFIX = "/console"

# No inline script or style anywhere: scripts and styles come from /console/static only.
# QR codes are inline SVG elements (markup, not script), so 'self' is enough for images too.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Pages show balances and pending decisions: never kept by a shared browser's cache.
    "Cache-Control": "no-store",
}


class CsrfRejected(Forbidden):
    code = "csrf_failed"


def csrf_for_session(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"walletsvc-console-csrf", hashlib.sha256).hexdigest()


def check_csrf(expected: str | None, offered: str | None) -> None:
    if not expected or not offered or not hmac.compare_digest(expected, offered):
        raise CsrfRejected(
            "this form is missing its security token or it is stale; reload the page and try again",
            field=CSRF_FIELD,
        )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def passkey_registration_challenge(session_token: str) -> bytes:
    """The WebAuthn challenge of registering a passkey in this session. Derived from the
    session secret (unpredictable without the HttpOnly cookie, unique per session) rather than
    stored; a replayed registration adds a credential id that exists already and is refused."""
    return hmac.new(
        session_token.encode(), b"walletsvc-passkey-registration", hashlib.sha256
    ).digest()


def relying_party(request: Request, settings: Settings) -> RelyingParty:
    """Whom passkeys belong to: the configured console origin, else the one the browser used."""
    origin = settings.console_origin.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}"
    host = origin.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return RelyingParty(rp_id=host.strip("[]"), origin=origin)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=CONSOLE_PREFIX,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=CONSOLE_PREFIX, httponly=True, samesite="strict", secure=is_https(request)
    )


class _ConsoleHeaders:
    """Plain ASGI, not BaseHTTPMiddleware (walletsvc.api.request_ids): API requests pass
    straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(CONSOLE_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_console_headers(app: FastAPI) -> None:
    """The strict headers on every console answer (pages, static files, errors)."""
    app.add_middleware(_ConsoleHeaders)
