"""The service's side of the signer: the only signer module the service imports.

``SignerClient`` speaks the wire format (walletsvc.signer.wire) over the Unix socket, or over
TCP with mutual TLS when ``signer_tcp_host`` is set, and turns the signer's answers into
domain errors: a refusal is SigningRefused (the risk hook then freezes the wallet), a
signature the kernel refused is VerificationFailed, a wallet frozen in the signer is Frozen,
and a signer that cannot be reached is DependencyUnavailable (in both of the last two the
worker waits and tries again on its next pass).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Sequence
from typing import IO, Any

from walletsvc.config import Settings
from walletsvc.domain.errors import (
    AccountLocked,
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    Frozen,
    InvalidInput,
    SigningRefused,
    StepUpFailed,
    StepUpReplayed,
    VerificationFailed,
)
from walletsvc.domain.ports import DecisionReceipt, EpochKeys, StaffEnrolment
from walletsvc.domain.transaction import ApprovedPayout, SignedTransaction, TransactionPlan
from walletsvc.tls import client_context

from . import wire


class SignerClient:
    """One connection, reused across calls and re-opened once after it broke."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"SignerClient({self.where})"

    @property
    def where(self) -> str:
        s = self._settings
        if s.signer_tcp_host:
            return f"tls://{s.signer_tcp_host}:{s.signer_tcp_port}"
        return str(s.signer_socket)

    # -- operations ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.call("status", {})

    def new_epoch(self, wallet: str, epoch: int) -> EpochKeys:
        return wire.decode_epoch(self.call("new_epoch", {"wallet": wallet, "epoch": epoch}))

    def import_seed(self, *, wallet: str, epoch: int, words: str, account_xpub: str) -> EpochKeys:
        """A key epoch made before the signer held seeds (genesis open; migration 0020)."""
        params = {"wallet": wallet, "epoch": epoch, "words": words, "account_xpub": account_xpub}
        return wire.decode_epoch(self.call("import_seed", params))

    def sign(
        self,
        *,
        wallet: str,
        kind: str,
        plan: TransactionPlan,
        approved: Sequence[ApprovedPayout],
        sweep_scripts: frozenset[bytes] = frozenset(),
        max_fee_sat: int | None = None,
        audit_head: tuple[int, str] | None = None,
    ) -> SignedTransaction:
        params: dict[str, Any] = {
            "wallet": wallet,
            "kind": kind,
            "sweep": sorted(bytes(s).hex() for s in sweep_scripts),
        }
        if max_fee_sat is not None:
            params["max_fee_sat"] = max_fee_sat
        if audit_head is not None:
            params["audit_head"] = {"seq": audit_head[0], "hash": audit_head[1]}
        batch = wire.pack_batch(plan, approved)
        return wire.decode_signed(self.call("sign", params, attachment=batch))

    def freeze(self, wallet: str | None, reason: str) -> None:
        self.call("freeze", {"wallet": wallet, "reason": reason})

    def apply_governed(
        self, kind: str, content: dict[str, Any], payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"kind": kind, "content": content}
        if payload is not None:
            params["payload"] = payload
        return self.call("apply_governed", params)

    def rotate_epoch(self, content: dict[str, Any]) -> EpochKeys:
        return wire.decode_epoch(self.apply_governed("key_rotation", content))

    def anchor_audit(self, seq: int, head_hash: str) -> None:
        self.call("anchor_audit", {"seq": seq, "hash": head_hash})

    # -- people (walletsvc.signer.people) -------------------------------------------------

    def enrol_staff(
        self,
        *,
        staff_id: str,
        username: str,
        role: str,
        groups: Sequence[str],
        totp_secret: str | None = None,
    ) -> StaffEnrolment:
        params: dict[str, Any] = {
            "staff_id": staff_id,
            "username": username,
            "role": role,
            "groups": sorted(set(groups)),
        }
        if totp_secret is not None:
            params["totp_secret"] = totp_secret
        return _enrolment(self.call("enrol_staff", params))

    def reset_totp(self, staff_id: str, content: dict[str, Any]) -> StaffEnrolment:
        return _enrolment(self.call("reset_totp", {"staff_id": staff_id, "content": content}))

    def disable_staff(self, staff_id: str) -> None:
        self.call("disable_staff", {"staff_id": staff_id})

    def close_genesis(self, *, only_if_quorums_met: bool = False) -> bool:
        answer = self.call("close_genesis", {"only_if_quorums_met": only_if_quorums_met})
        return bool(answer.get("genesis_open"))

    def check_totp(self, staff_id: str, code: str) -> int:
        return int(self.call("check_totp", {"staff_id": staff_id, "code": code})["step"])

    def record_decision(
        self,
        *,
        staff_id: str,
        kind: str,
        content: dict[str, Any],
        decision: str,
        totp: str | None = None,
        passkey: str | None = None,
    ) -> DecisionReceipt:
        params: dict[str, Any] = {
            "staff_id": staff_id,
            "kind": kind,
            "content": content,
            "decision": decision,
        }
        if totp is not None:
            params["totp"] = totp
        if passkey is not None:
            params["passkey"] = passkey
        answer = self.call("record_decision", params)
        step = answer.get("step")
        return DecisionReceipt(str(answer["digest"]), step if isinstance(step, int) else None)

    def register_passkey(
        self, *, staff_id: str, credential: str, challenge: bytes, totp: str
    ) -> str:
        params = {
            "staff_id": staff_id,
            "credential": credential,
            "challenge": challenge.hex(),
            "totp": totp,
        }
        return str(self.call("register_passkey", params)["credential_id"])

    def remove_passkey(self, staff_id: str, credential_id: str) -> None:
        self.call("remove_passkey", {"staff_id": staff_id, "credential_id": credential_id})

    def audit_anchors(self) -> list[tuple[int, str]]:
        """Every audit head the signer recorded, oldest first (paged over the wire)."""
        found: list[tuple[int, str]] = []
        after: int | None = 0
        while after is not None:
            page = self.call("audit_anchors", {"after": after})
            seqs, hashes, after = page.get("seqs"), page.get("hashes"), page.get("next_after")
            if (
                not isinstance(seqs, list)
                or not isinstance(hashes, list)
                or len(seqs) != len(hashes)
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs)
                or not all(isinstance(h, str) for h in hashes)
                or (after is not None and (not seqs or after != seqs[-1]))  # always progress
            ):
                raise DependencyUnavailable("the signer answered a malformed list of anchors")
            found.extend(zip(seqs, hashes, strict=True))
        return found

    # -- transport -------------------------------------------------------------------------

    def call(
        self, op: str, params: dict[str, Any], *, attachment: bytes | None = None
    ) -> dict[str, Any]:
        """One request; ``attachment`` (raw bytes: a signing batch) follows its line."""
        request_id = uuid.uuid4().hex
        envelope: dict[str, Any] = {"id": request_id, "op": op, "params": params}
        if attachment is not None:
            envelope["attachment"] = len(attachment)
        line = json.dumps(envelope).encode() + b"\n"
        with self._lock:
            reply = self._exchange(line, attachment or b"")
        if not isinstance(reply, dict) or reply.get("id") != request_id:
            self.close()
            raise DependencyUnavailable("the signer answered another request; reconnecting")
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            result: dict[str, Any] = reply["result"]
            return result
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {}
        raise _domain_error(str(error.get("code")), str(error.get("message", "no message")))

    def _exchange(self, line: bytes, attachment: bytes) -> Any:
        for attempt in (1, 2):
            try:
                stream = self._stream()
                stream.write(line)
                if attachment:
                    stream.write(attachment)
                stream.flush()
                answer = stream.readline(wire.MAX_LINE_BYTES + 1)
                if not answer:
                    raise ConnectionError("the signer closed the connection")
                return json.loads(answer)
            except (OSError, ValueError) as exc:
                self.close()
                if attempt == 2:
                    raise DependencyUnavailable(
                        f"the signer at {self.where} is unreachable ({type(exc).__name__})"
                    ) from None
        raise AssertionError("unreachable")

    def _stream(self) -> IO[bytes]:
        if self._file is None:
            self._sock = self._connect()
            stream: IO[bytes] = self._sock.makefile("rwb")  # type: ignore[assignment]
            self._file = stream
        return self._file

    def _connect(self) -> socket.socket:
        s = self._settings
        timeout = s.signer_timeout_s
        if not s.signer_tcp_host:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(s.signer_socket))
            except OSError:
                sock.close()
                raise
            return sock
        raw = socket.create_connection((s.signer_tcp_host, s.signer_tcp_port), timeout=timeout)
        try:
            return client_tls_context(s).wrap_socket(raw, server_hostname=s.signer_tcp_host)
        except (OSError, ssl.SSLError):
            raw.close()
            raise

    def close(self) -> None:
        for closable in (self._file, self._sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        self._file, self._sock = None, None


def client_tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the signer against the configured CA (and its name); present our certificate."""
    cert, key, ca = settings.signer_tls_cert, settings.signer_tls_key, settings.signer_tls_ca
    if cert is None or key is None or ca is None:
        raise DependencyUnavailable(
            "the signer over TCP needs WALLETSVC_SIGNER_TLS_CERT, _KEY and _CA (mutual TLS)"
        )
    return client_context(ca, cert_file=cert, key_file=key)  # the service's one TLS policy


def _enrolment(answer: dict[str, Any]) -> StaffEnrolment:
    secret, uri = answer.get("totp_secret"), answer.get("otpauth_uri")
    return StaffEnrolment(
        staff_id=str(answer["staff_id"]),
        totp_secret=secret if isinstance(secret, str) else None,
        otpauth_uri=uri if isinstance(uri, str) else None,
    )


def _domain_error(code: str, message: str) -> DomainError:
    if code == wire.FROZEN:
        # Not an integrity alarm: a freeze reaches the signer before the database, so a
        # batch claimed just before it lands here; it waits like any frozen payout.
        return Frozen(message, field="wallet")
    if code == wire.REFUSED:
        return SigningRefused(f"the signer refused: {message}")
    if code == wire.VERIFICATION_FAILED:
        return VerificationFailed(message)
    if code == wire.TOTP_REPLAYED:
        return StepUpReplayed(message, field="totp")
    if code == wire.STEP_UP_FAILED:
        return StepUpFailed(message, field="totp")
    if code == wire.PASSKEY_FAILED:
        return StepUpFailed(message, field="passkey")
    if code == wire.THROTTLED:
        return AccountLocked(message)
    if code == wire.NOT_ALLOWED:
        return Forbidden(f"the signer refused: {message}")
    if code == wire.CONFLICT:
        return Conflict(message, field="id")
    if code == wire.INVALID_REQUEST:
        return InvalidInput(f"the signer refused a malformed request: {message}")
    return DependencyUnavailable(f"the signer failed: {message}")
