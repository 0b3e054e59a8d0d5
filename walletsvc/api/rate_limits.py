"""Per-client request limits with `RateLimit-*` headers, and 429 in the one error shape.

A fixed window per client: per API token or staff session (keyed by a hash of the bearer
credential, never the credential itself), else per client address. Each answer carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the
window ends; the IETF httpapi "RateLimit header fields" draft); over the limit the answer is
429 ``rate_limited`` with ``Retry-After``, and the request is not run.

Hand-written rather than a library: the counters are a dictionary and a lock, kept in this
process's memory (each API process limits on its own; put a shared limiter in the proxy if
you run several), and the usual ASGI limiters bring a storage layer this service does not need.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walletsvc.api.errors import error_body

# Probes and scrapes are never limited: an orchestrator must always be able to ask.
UNLIMITED_PATHS = frozenset({"/v1/health", "/v1/ready", "/v1/metrics", "/metrics"})
_MAX_TRACKED = 100_000  # windows kept before expired ones are pruned


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


@dataclass
class RateLimiter:
    """``limit`` requests per ``window_s`` seconds per client key."""

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: str) -> Verdict:
        now = self.clock()
        with self._lock:
            started, count = self._windows.get(key, (now, 0))
            if now - started >= self.window_s:
                started, count = now, 0
            allowed = count < self.limit
            if allowed:
                count += 1
            self._windows[key] = (started, count)
            if len(self._windows) > _MAX_TRACKED:
                self._prune(now)
        reset = max(0, math.ceil(started + self.window_s - now))
        return Verdict(allowed, self.limit, self.limit - count, reset)

    def _prune(self, now: float) -> None:
        expired = [k for k, (s, _) in self._windows.items() if now - s >= self.window_s]
        for key in expired:
            del self._windows[key]


def client_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return "credential:" + hashlib.sha256(secret.strip().encode()).hexdigest()
    return "address:" + (request.client.host if request.client else "unknown")


class _RateLimits:
    """Plain ASGI, not BaseHTTPMiddleware: see walletsvc.api.request_ids."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is None or request.url.path in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        verdict = limiter.hit(client_key(request))
        if not verdict.allowed:
            refusal = JSONResponse(
                error_body(
                    "rate_limited",
                    f"more than {verdict.limit} requests in {limiter.window_s:g} s; "
                    f"retry in {verdict.reset_s} s",
                    None,
                ),
                status_code=429,
                headers={**verdict.headers(), "Retry-After": str(verdict.reset_s)},
            )
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(verdict.headers())
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_rate_limits(app: FastAPI) -> None:
    """The limiter is ``app.state.rate_limiter`` (set at start from the settings; absent or
    None: no limits)."""
    app.add_middleware(_RateLimits)
