"""Control characters in a path or a query parameter are refused at the door (422).

No id, name, address, cursor or reference of this API contains them, and PostgreSQL cannot
even compare text with NUL in it (the driver fails, which would be a 500). One check here
covers every route's path and query parameters; JSON bodies are checked by their models
(walletsvc.api.schemas: ``Text``, ``Prose``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from walletsvc.api.errors import error_body


def _has_control(value: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def offending_input(request: Request) -> str | None:
    """The name of the first path or query input holding a control character, if any."""
    if _has_control(request.url.path):
        return "path"
    query = request.scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if _has_control(name) or _has_control(value):
            return name if not _has_control(name) else "query"
    return None


class _InputGuard:
    """Plain ASGI, not BaseHTTPMiddleware: see walletsvc.api.request_ids."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = offending_input(Request(scope))
            if field is not None:
                message = f"{field}: control characters are not allowed"
                refusal = JSONResponse(error_body("invalid_input", message, field), status_code=422)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_input_guard(app: FastAPI) -> None:
    app.add_middleware(_InputGuard)
