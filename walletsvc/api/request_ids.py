"""``X-Request-Id`` on every response and in every log line of its request.

The caller's id is kept when it is a sane token (so a proxy's or client's id follows the
request through), otherwise a fresh one is made. The error body keeps its contract shape;
the id travels in the header only.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from fastapi import FastAPI, Request
from fastapi.routing import iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walletsvc.metrics import HTTP_DURATION, HTTP_REQUESTS

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# A standard-library logger: the service's JSON configuration renders it (with the bound
# request id and the extras as fields); unconfigured (tests, library use) it stays quiet.
log = logging.getLogger(__name__)


def request_id_for(request: Request) -> str:
    """The id this request carries (set by the middleware; a fresh one if it never ran)."""
    existing = getattr(request.state, "request_id", None)
    if isinstance(existing, str):
        return existing
    offered = request.headers.get(HEADER, "")
    chosen = offered if _SANE.fullmatch(offered) else uuid.uuid4().hex
    request.state.request_id = chosen
    return chosen


def route_template(request: Request) -> str:
    """The matched route's full template (`/v1/withdrawals/{withdrawal_id}`), never the raw
    path: ids and probes of unknown paths must not make a metric series each.

    The route in the request scope carries its path without the prefix it was included under,
    so the template is looked up among the application's effective routes by endpoint."""
    endpoint = request.scope.get("endpoint")
    if endpoint is None:
        return "unmatched"
    templates: dict[object, str] | None = getattr(request.app.state, "route_templates", None)
    if templates is None:
        templates = {
            context.endpoint: str(context.path)
            for context in iter_route_contexts(request.app.routes)
            if context.endpoint is not None
        }
        request.app.state.route_templates = templates
    return templates.get(endpoint, "unmatched")


class _RequestIds:
    """Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs
    the rest of the app in a task of its own behind a memory stream, a cost every request
    paid on the one event loop (docs/performance.md, "The freeze under load")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request_id_for(request)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
        elapsed = time.perf_counter() - started
        route = route_template(request)
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_DURATION.labels(request.method, route).observe(elapsed)
        # The path only: a query string is the caller's input, and headers may hold tokens.
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.url.path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )


def install_request_ids(app: FastAPI) -> None:
    app.add_middleware(_RequestIds)
