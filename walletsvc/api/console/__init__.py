"""The treasury console: server-rendered pages for staff (``/console``), see docs/console.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from walletsvc.api.console.pages import router
from walletsvc.api.console.security import install_console_headers

STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    """Mount the console's pages and static files, with their security headers."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    install_console_headers(app)
