"""HTTPS and mutual TLS over real sockets on loopback: a private CA built with `cryptography`,
uvicorn configured exactly as `walletsvc serve` configures it, and API tokens bound to a
client certificate."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.conftest import Tokens
from tests.tls_helpers import Issued, PrivateCA
from walletsvc.api.app import create_app
from walletsvc.api.tls import uvicorn_tls_options
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings
from walletsvc.governance.tokens import create_token
from walletsvc.tls import client_context, normalize_fingerprint


@contextmanager
def https_server(runtime: Runtime, settings: Settings) -> Iterator[str]:
    """uvicorn on 127.0.0.1 with the service's TLS options; yields the base URL."""
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        **uvicorn_tls_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # startup, not a synchronisation of the behaviour under test
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path / "ca")


@pytest.fixture
def server_cert(ca: PrivateCA) -> Issued:
    return ca.issue("walletsvc-api", server=True)


def tls_settings(runtime: Runtime, server_cert: Issued, client_ca: Path | None) -> Settings:
    return runtime.settings.model_copy(
        update={
            "tls_cert": server_cert.cert,
            "tls_key": server_cert.key,
            "tls_client_ca": client_ca,
        }
    )


def get(url: str, context: ssl.SSLContext, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=context) as client:
        return client.get(url, headers=headers)


def test_https_with_a_private_ca(
    runtime: Runtime, tokens: Tokens, ca: PrivateCA, server_cert: Issued
) -> None:
    with https_server(runtime, tls_settings(runtime, server_cert, None)) as url:
        response = get(f"{url}/v1/wallets", client_context(ca.cert), tokens.read_only)
        assert response.status_code == 200
        # A client that does not trust the private CA refuses the server.
        with pytest.raises(httpx.ConnectError):
            get(f"{url}/v1/health", ssl.create_default_context())
        # Plain HTTP to the HTTPS port gets nothing useful.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http") + "/v1/health")


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    runtime: Runtime, tokens: Tokens, ca: PrivateCA, server_cert: Issued, tmp_path: Path
) -> None:
    engine = ca.issue("payout-engine", server=False)
    stranger = PrivateCA(tmp_path / "other", "another CA").issue("stranger", server=False)
    with https_server(runtime, tls_settings(runtime, server_cert, ca.cert)) as url:
        with_cert = client_context(ca.cert, cert_file=engine.cert, key_file=engine.key)
        assert get(f"{url}/v1/wallets", with_cert, tokens.read_only).status_code == 200
        for context in (
            client_context(ca.cert),  # no certificate at all
            client_context(ca.cert, cert_file=stranger.cert, key_file=stranger.key),
        ):
            # TLS 1.3 reports the refused certificate after the handshake, on first read.
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                get(f"{url}/v1/health", context)


def test_a_bound_token_needs_its_certificate(
    runtime: Runtime, tokens: Tokens, ca: PrivateCA, server_cert: Issued
) -> None:
    engine = ca.issue("payout-engine", server=False)
    other = ca.issue("dashboard", server=False)
    bound = create_token(
        runtime.db,
        runtime.tags,
        name="engine",
        scopes=["read"],
        actor="test",
        cert_fingerprint=":".join(
            engine.fingerprint[i : i + 2].upper() for i in range(0, 64, 2)
        ),  # as openssl prints it
    )
    assert bound.cert_fingerprint == engine.fingerprint
    with https_server(runtime, tls_settings(runtime, server_cert, ca.cert)) as url:
        as_engine = client_context(ca.cert, cert_file=engine.cert, key_file=engine.key)
        as_other = client_context(ca.cert, cert_file=other.cert, key_file=other.key)
        assert get(f"{url}/v1/wallets", as_engine, bound.secret).status_code == 200
        refused = get(f"{url}/v1/wallets", as_other, bound.secret)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        # An unbound token works with any certificate the CA issued.
        assert get(f"{url}/v1/wallets", as_other, tokens.read_only).status_code == 200


def test_a_bound_token_is_refused_without_tls(
    runtime: Runtime, ca: PrivateCA, server_cert: Issued
) -> None:
    engine = ca.issue("payout-engine", server=False)
    bound = create_token(
        runtime.db,
        runtime.tags,
        name="engine",
        scopes=["read"],
        actor="test",
        cert_fingerprint=engine.fingerprint,
    )
    with https_server(runtime, tls_settings(runtime, server_cert, None)) as url:
        # HTTPS without client certificates: the bound token has nothing to match.
        assert get(f"{url}/v1/wallets", client_context(ca.cert), bound.secret).status_code == 401


def test_fingerprints_are_normalised_and_checked() -> None:
    plain = "ab" * 32
    assert normalize_fingerprint("sha256 Fingerprint=" + ":".join(["AB"] * 32)) == plain
    for bad in ("", "ab" * 31, "zz" * 32, "ab" * 33):
        with pytest.raises(ValueError, match="64 hex digits"):
            normalize_fingerprint(bad)


def test_settings_refuse_half_a_tls_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings(data_dir=tmp_path, tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="needs WALLETSVC_TLS_CERT"):
        Settings(data_dir=tmp_path, tls_client_ca=tmp_path / "ca.pem")


def test_clearing_a_binding_in_the_database_breaks_the_token(runtime: Runtime) -> None:
    from sqlalchemy import update

    from walletsvc.db.models import ApiToken
    from walletsvc.domain.errors import Unauthenticated
    from walletsvc.governance.tokens import authenticate_api_token

    bound = create_token(
        runtime.db, runtime.tags, name="e", scopes=["read"], actor="t", cert_fingerprint="ab" * 32
    )
    with runtime.db.write() as uow:
        uow.session.execute(update(ApiToken).values(cert_fingerprint=None))
    with pytest.raises(Unauthenticated):
        authenticate_api_token(runtime.db, runtime.tags, bound.secret)


def test_token_create_binds_from_the_cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from walletsvc.cli.main import app

    s = runtime.settings
    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("WALLETSVC_DATABASE_URL", s.database_url)
    monkeypatch.setenv("WALLETSVC_KEK_FILE", str(s.kek_path))
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "token",
            "create",
            "--name",
            "engine",
            "--scope",
            "read",
            "--cert-fingerprint",
            "AB:" * 31 + "AB",
        ],
    )
    assert made.exit_code == 0, made.output
    assert f"bound to the client certificate with SHA-256 {'ab' * 32}" in made.output
    refused = runner.invoke(
        app, ["token", "create", "--name", "x", "--scope", "read", "--cert-fingerprint", "nope"]
    )
    assert refused.exit_code == 1
    assert "64 hex digits" in refused.output
