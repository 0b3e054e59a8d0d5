"""The signer process: its files, its socket, its request loop.

``<signer_dir>/`` (mode 0700) holds ``signer.key`` (32 random bytes, mode 0600: seals the
seeds, MACs the ledger, each under its own HKDF subkey as walletsvc.keys.kek does),
``ledger.jsonl`` and ``ledger.jsonl.head`` (walletsvc.signer.ledger) and ``signer.sock``
(mode 0600). Requests are answered one at a time under one lock, so a decision and its
ledger record are never interleaved with another's.

Over TCP the server speaks TLS 1.2+ with client certificates required (``ssl`` stdlib,
CERT_REQUIRED against the configured CA): only a client holding a key the operator issued
reaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import socketserver
import ssl
import stat
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.config import Settings
from walletsvc.keys.errors import KekFileError
from walletsvc.keys.kek import Kek, create_dev_kek, load_kek
from walletsvc.keys.passkeys import RelyingParty
from walletsvc.policy.document import load_policy_yaml
from walletsvc.tls import server_context

from . import wire
from .core import Clock, SignerConfig, SignerCore
from .errors import SignerError
from .ledger import Ledger
from .people import PeopleConfig

log = logging.getLogger(__name__)

KEY_FILE = "signer.key"
LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = "signer.lock"
LEDGER_MAC = "signer-ledger"  # HKDF purpose of the ledger's MAC key


class SignerSetupError(RuntimeError):
    """The signer cannot start from its files (missing key, loose permissions, ...)."""


def ensure_signer_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def load_signer_key(settings: Settings) -> Kek:
    """The signer's key; created on regtest on first start, provisioned elsewhere."""
    path = settings.signer_path / KEY_FILE
    if not path.exists():
        if settings.network.value != "regtest":
            raise SignerSetupError(
                f"no signer key at {path}: provision 32 random bytes there (mode 0600, owned by "
                "the signer's user) before starting the signer on a real network"
            )
        create_dev_kek(path)
    try:
        return load_kek(path)
    except KekFileError as exc:
        raise SignerSetupError(str(exc).replace("KEK", "signer key")) from None


def open_core(settings: Settings, *, clock: Clock | None = None) -> SignerCore:
    """Open the signer from its files: key, verified ledger, first policy (local init).

    One process at a time: an exclusive lock on ``signer.lock`` is held until
    :func:`close_core`, so a local set-up command cannot write the ledger under a running
    signer (two writers would break its chain)."""
    ensure_signer_dir(settings.signer_path)
    lock = _lock(settings.signer_path / LOCK_FILE)
    try:
        key = load_signer_key(settings)
        ledger = Ledger.open(settings.signer_path / LEDGER_FILE, key.subkey(LEDGER_MAC))
        core = SignerCore(
            ledger,
            key,
            KernelScriptVerifier(),
            SignerConfig(
                network=settings.network,
                max_fee_sat=settings.max_fee_sat,
                people=people_config(settings),
            ),
            clock=clock,
        )
        if core.state.policy is None:
            core.install_first_policy(load_policy_yaml(settings.policy_file.read_text()))
    except BaseException:
        os.close(lock)
        raise
    core.files_lock = lock
    return core


def people_config(settings: Settings) -> PeopleConfig:
    """The signer's own step-up rules and passkey relying party (the console's origin, the
    one passkeys are bound to; by default the service's own address, as in development)."""
    origin = settings.console_origin.rstrip("/") or f"http://{settings.host}:{settings.port}"
    host = origin.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return PeopleConfig(
        totp_window=settings.totp_valid_window,
        relying_party=RelyingParty(rp_id=host.strip("[]"), origin=origin),
        max_failures=settings.totp_max_failures,
        lockout=timedelta(seconds=settings.totp_lockout_s),
    )


def close_core(core: SignerCore) -> None:
    core.wipe()  # the decrypted accounts and derived keys of the signing engine's cache
    if core.files_lock is not None:
        os.close(core.files_lock)  # releases the lock
        core.files_lock = None


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SignerSetupError(
            f"another signer process holds {path}: stop it before changing the signer's files"
        ) from None
    return fd


def answer(core: SignerCore, line: bytes) -> dict[str, Any]:
    """One request line in, one reply object out. Never raises; never echoes secrets."""
    request_id: object = None
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise wire.WireError("a request is a JSON object")
        request_id = request.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise wire.WireError("every request carries a string id")
        op, params = request.get("op"), request.get("params", {})
        if not isinstance(op, str) or not isinstance(params, dict):
            raise wire.WireError("op must be a string and params an object")
        with core.lock:
            result = core.handle(op, params)
        return {"id": request_id, "ok": True, "result": result}
    except (ValueError, wire.WireError) as exc:
        return _error(request_id, wire.INVALID_REQUEST, str(exc)[:300])
    except SignerError as exc:
        if exc.code != wire.INVALID_REQUEST:
            log.warning("signer refused %s: %s", request_id, exc.message)
        return _error(request_id, exc.code, exc.message)
    except Exception:
        log.exception("signer request %s failed", request_id)
        return _error(request_id, wire.INTERNAL, "the signer failed; see its log")


def _error(request_id: object, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer | _TlsServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(wire.MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > wire.MAX_LINE_BYTES:
                reply = _error(None, wire.INVALID_REQUEST, "request too large")
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                return
            reply = answer(self.server.core, line)
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, core: SignerCore) -> None:
        self.core = core
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise SignerSetupError(f"{path} exists and is not a socket")
            path.unlink()  # a stale socket of a previous run
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)


class _TlsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], core: SignerCore, context: ssl.SSLContext):
        self.core = core
        self.context = context
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # The handshake runs on the first read, in the connection's own thread: a client that
        # connects and stalls must not hold up the accept loop.
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, addr


def server_tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+, our certificate, and client certificates required from the configured CA."""
    cert, key, ca = settings.signer_tls_cert, settings.signer_tls_key, settings.signer_tls_ca
    if cert is None or key is None or ca is None:
        raise SignerSetupError(
            "the signer over TCP needs WALLETSVC_SIGNER_TLS_CERT, _KEY and _CA (mutual TLS)"
        )
    return server_context(cert, key, client_ca_file=ca)  # the service's one TLS policy


class SignerServer:
    """The Unix socket (always) and the mutual-TLS port (when configured) of one core."""

    def __init__(self, settings: Settings, core: SignerCore | None = None) -> None:
        self.core = core or open_core(settings)
        self._servers: list[socketserver.BaseServer] = []
        try:
            self._servers.append(_UnixServer(settings.signer_socket, self.core))
            if settings.signer_tcp_host:
                address = (settings.signer_tcp_host, settings.signer_tcp_port)
                context = server_tls_context(settings)
                self._servers.append(_TlsServer(address, self.core, context))
        except BaseException:
            for server in self._servers:
                server.server_close()
            close_core(self.core)
            raise
        self._threads: list[threading.Thread] = []
        self.socket_path = settings.signer_socket

    @property
    def tcp_port(self) -> int | None:
        for server in self._servers:
            if isinstance(server, _TlsServer):
                return int(server.server_address[1])
        return None

    def start(self) -> SignerServer:
        """Serve in background threads (tests, and `serve` with the signer in-process)."""
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, name="signer", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def serve_forever(self) -> None:
        """Serve until interrupted (the `walletsvc signer` process)."""
        self.start()
        try:
            for thread in self._threads:
                thread.join()
        finally:
            self.close()

    def close(self) -> None:
        started = bool(self._threads)
        for server in self._servers:
            if started:  # shutdown() waits for a serve_forever loop, which must exist
                server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        close_core(self.core)

    def __enter__(self) -> SignerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
