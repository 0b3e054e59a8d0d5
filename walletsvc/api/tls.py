"""HTTPS for `walletsvc serve`: uvicorn with walletsvc.tls's context, and the client
certificate handed to the application.

uvicorn does not put the peer certificate into the ASGI scope, so the HTTP/1.1 protocol is
subclassed to add it per connection as the ASGI TLS extension describes it
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, leaf first). Token binding
(walletsvc.api.deps) reads it from there.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from fastapi import Request
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from walletsvc.config import Settings
from walletsvc.tls import fingerprint_of_pem, server_context

ASGIApp = Callable[..., Any]


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the TLS extension (the client's certificate) to every
    request of a TLS connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        self.app = _with_tls_extension(self.app, {"client_cert_chain": chain})


def _with_tls_extension(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
        await app(scope, receive, send)

    return wrapped


def uvicorn_tls_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: HTTPS when a certificate and key are set,
    client certificates required when a client CA is; nothing (plain HTTP) otherwise."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca

    def factory(_config: Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_context(cert, key, client_ca_file=client_ca)

    return {"ssl_context_factory": factory, "http": ClientCertH11Protocol}


def client_certificate_fingerprint(request: Request) -> str | None:
    """The SHA-256 fingerprint of the certificate the client presented, if any."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return fingerprint_of_pem(chain[0]) if chain else None
