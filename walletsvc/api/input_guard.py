"""Control characters in a path or a query parameter are refused at the door (422).

No id, name, address, cursor or reference of this API contains them, and PostgreSQL cannot
even compare text with NUL in it (the driver fails, which would be a 500). One check here
covers every route's path and query parameters; JSON bodies are checked by their models
(walletsvc.api.schemas: ``Text``, ``Prose``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

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


def install_input_guard(app: FastAPI) -> None:
    @app.middleware("http")
    async def _refuse_control_characters(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        field = offending_input(request)
        if field is not None:
            message = f"{field}: control characters are not allowed"
            return JSONResponse(error_body("invalid_input", message, field), status_code=422)
        return await call_next(request)
