"""The signer over TCP: mutual TLS against the configured CA, or no conversation at all."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import REPO
from walletsvc.config import Settings
from walletsvc.domain.errors import DependencyUnavailable
from walletsvc.signer.client import SignerClient
from walletsvc.signer.server import SignerServer

LOOPBACK = "127.0.0.1"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


class Ca:
    def __init__(self, tmp: Path, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.tmp = tmp
        self.path = tmp / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path = self.tmp / f"{name}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(key, self.tmp / f"{name}.key")


@pytest.fixture
def tls_signer(tmp_path: Path) -> Iterator[tuple[Settings, Ca]]:
    ca = Ca(tmp_path, "ops-ca")
    cert, key = ca.issue("signer")
    settings = Settings(
        data_dir=tmp_path / "data",
        policy_file=REPO / "policies" / "default.yaml",
        signer_tcp_host=LOOPBACK,
        signer_tcp_port=0,
        signer_tls_cert=cert,
        signer_tls_key=key,
        signer_tls_ca=ca.path,
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
    tls_signer: tuple[Settings, Ca],
) -> None:
    server, ca = tls_signer
    cert, key = ca.issue("api-host")
    client = SignerClient(client_settings(server, cert, key, ca.path))
    assert client.status()["network"] == "regtest"
    client.close()


def test_a_client_with_a_certificate_of_another_ca_is_refused(
    tls_signer: tuple[Settings, Ca], tmp_path: Path
) -> None:
    server, ca = tls_signer
    rogue = Ca(tmp_path, "rogue-ca")
    cert, key = rogue.issue("intruder")
    client = SignerClient(client_settings(server, cert, key, ca.path))
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        client.status()


def test_a_client_without_a_certificate_is_refused(tls_signer: tuple[Settings, Ca]) -> None:
    server, ca = tls_signer
    context = ssl.create_default_context(cafile=str(ca.path))
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
    tls_signer: tuple[Settings, Ca], tmp_path: Path
) -> None:
    """The client checks the signer too: a stand-in signer (another CA) gets no request."""
    server, ca = tls_signer
    cert, key = ca.issue("api-host")
    other = Ca(tmp_path, "someone-else")
    client = SignerClient(client_settings(server, cert, key, other.path))
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        client.status()
