"""The signer over TCP: mutual TLS against the configured CA, or no conversation at all."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tls_helpers import PrivateCA
from walletsvc.config import Settings
from walletsvc.domain.errors import DependencyUnavailable
from walletsvc.signer.client import SignerClient
from walletsvc.signer.server import SignerServer

LOOPBACK = "127.0.0.1"


@pytest.fixture
def tls_signer(tmp_path: Path) -> Iterator[tuple[Settings, PrivateCA]]:
    ca = PrivateCA(tmp_path / "ops-ca", "ops-ca")
    signer = ca.issue("signer", server=True)
    settings = Settings(
        data_dir=tmp_path / "data",
        policy_file=REPO / "policies" / "default.yaml",
        signer_tcp_host=LOOPBACK,
        signer_tcp_port=0,
        signer_tls_cert=signer.cert,
        signer_tls_key=signer.key,
        signer_tls_ca=ca.cert,
    )
    with SignerServer(settings) as server:
        assert server.tcp_port is not None
        yield settings.model_copy(update={"signer_tcp_port": server.tcp_port}), ca


def client_settings(server: Settings, cert: Path, key: Path, ca: Path) -> Settings:
    return server.model_copy(
        update={
            "data_dir": server.data_dir.parent / "api-host",  # no access to the signer's dir
            "signer_dir": None,
            "signer_tls_cert": cert,
            "signer_tls_key": key,
            "signer_tls_ca": ca,
        }
    )


def test_a_client_with_a_certificate_of_the_ca_is_served(
    tls_signer: tuple[Settings, PrivateCA],
) -> None:
    server, ca = tls_signer
    api_host = ca.issue("api-host", server=False)
    client = SignerClient(client_settings(server, api_host.cert, api_host.key, ca.cert))
    assert client.status()["network"] == "regtest"
    client.close()


def test_a_client_with_a_certificate_of_another_ca_is_refused(
    tls_signer: tuple[Settings, PrivateCA], tmp_path: Path
) -> None:
    server, ca = tls_signer
    intruder = PrivateCA(tmp_path / "rogue-ca", "rogue-ca").issue("intruder", server=False)
    client = SignerClient(client_settings(server, intruder.cert, intruder.key, ca.cert))
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        client.status()


def test_a_client_without_a_certificate_is_refused(tls_signer: tuple[Settings, PrivateCA]) -> None:
    server, ca = tls_signer
    context = ssl.create_default_context(cafile=str(ca.cert))
    raw = socket.create_connection((LOOPBACK, server.signer_tcp_port), timeout=10)
    # Refused at the handshake or, with TLS 1.3, at the first read.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(b'{"id": "1", "op": "status", "params": {}}\n')
        if not tls.recv(1):
            raise ConnectionResetError("the signer closed the connection")
    raw.close()


def test_a_signer_with_a_certificate_of_another_ca_is_not_trusted(
    tls_signer: tuple[Settings, PrivateCA], tmp_path: Path
) -> None:
    """The client checks the signer too: a stand-in signer (another CA) gets no request."""
    server, ca = tls_signer
    api_host = ca.issue("api-host", server=False)
    other = PrivateCA(tmp_path / "someone-else", "someone-else")
    client = SignerClient(client_settings(server, api_host.cert, api_host.key, other.cert))
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        client.status()
