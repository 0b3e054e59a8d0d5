"""TLS contexts for the service's sockets, and certificate fingerprints.

One place that decides how walletsvc speaks TLS, for the HTTP API (`walletsvc serve`, through
uvicorn) and for any other TCP link of the service (the separate signer's): TLS 1.2 at least,
the platform's default ciphers, and client certificates required and checked against a
private CA when one is configured (mutual TLS). Standard library only (``ssl``).
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def server_context(
    cert_file: Path | str, key_file: Path | str, *, client_ca_file: Path | str | None = None
) -> ssl.SSLContext:
    """A server context presenting ``cert_file``; with ``client_ca_file`` every client must
    present a certificate issued by that CA, or the handshake fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca_file))
    return context


def client_context(
    ca_file: Path | str,
    *,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    """A client context trusting only ``ca_file`` (the private CA), checking the server's
    name, and presenting ``cert_file`` when the server asks for a client certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes, lower-case hex (64 characters)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: str) -> str:
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def normalize_fingerprint(text: str) -> str:
    """Accepts `openssl x509 -fingerprint -sha256` output (`AB:CD:…`, with or without the
    `sha256 Fingerprint=` prefix) or plain hex; raises ValueError for anything else."""
    value = text.strip().rsplit("=", 1)[-1].replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(value):
        raise ValueError("a certificate fingerprint is 64 hex digits of SHA-256")
    return value
