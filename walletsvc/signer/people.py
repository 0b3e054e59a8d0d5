"""The signer's people operations: enrolment, step-ups and decisions it verifies itself.

The TOTP secrets live here, sealed under the signer key's seed vault (the primitive that seals
seeds), in the signer's own ledger (``staff`` records, :mod:`walletsvc.signer.evidence`). The
service never holds one: it asks the signer whether a code is right (``check_totp``) and has
the signer record each approval decision (``record_decision``), which the signer accepts only
after checking the step-up itself. Approval tiers and governed changes are then counted from
these records (``Evidence.quorum_reached_at``), never from the service's word.

Trust at the start (docs/threat-model.md): until ``close_genesis`` the first staff list is
enrolled on the service's word, as the first policy is installed from the signer's files; an
existing member's secret may be imported then (the upgrade from secrets in the database).
After genesis, enrolling or changing a member needs the policy's ``policy_change`` quorum of
decisions recorded here on the exact ``staff_change`` content, the member excluded; each such
piece of evidence is used once. Tightening (disabling a member, removing a passkey, removing
groups or an approver's role) applies at once on one word.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyotp

from walletsvc.domain.access import ROLES
from walletsvc.domain.canonical import canonical_json, content_digest
from walletsvc.domain.errors import DomainError, InvalidInput
from walletsvc.keys.errors import SeedDecryptionError
from walletsvc.keys.integrity import encode_message
from walletsvc.keys.passkeys import (
    RelyingParty,
    StoredPasskey,
    approval_challenge,
    credential_id_of,
    verify_approval,
    verify_registration,
)
from walletsvc.keys.sealing import NONCE_SIZE, SeedVault
from walletsvc.policy.document import GOVERNED_ACTIONS, PolicyDocument

from . import wire
from .errors import SignerError
from .evidence import (
    DECISION,
    GENESIS_CLOSED,
    PASSKEY,
    PASSKEY_REMOVED,
    STAFF,
    STAFF_DISABLED,
    TOTP_USED,
    StaffEntry,
)
from .state import SignerState

TOTP_PERIOD_S = 30
TOTP_DIGITS = 6
ISSUER = "walletsvc"
STAFF_CHANGE = "staff_change"
TOTP_RESET = "staff_totp_reset"
MAX_CONTENT_BYTES = 64 * 1024
MIN_SECRET_BYTES = 10  # 80 bits, RFC 4226's minimum (pyotp makes 160)
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
GROUP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

Record = Callable[[str, dict[str, Any]], None]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class PeopleConfig:
    """The signer's own step-up settings: the service's request never chooses them."""

    totp_window: int = 1  # time steps either side of now
    relying_party: RelyingParty | None = None  # None: passkeys are refused
    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)


@dataclass
class _Failures:
    count: int = 0
    locked_until: datetime | None = None


@dataclass
class People:
    """Answers the people operations against ``state`` (the signer's fold), writing through
    ``record`` (ledger append + fold). The failure throttle is in memory: a restart forgets
    it, which costs an attacker a signer restart per few guesses (the service's lockout
    counters stand in front of it too)."""

    state: SignerState
    vault: SeedVault
    record: Record
    clock: Clock
    config: PeopleConfig
    _failures: dict[str, _Failures] = field(default_factory=dict)

    # -- enrolment ---------------------------------------------------------------------------

    def enrol_staff(self, params: dict[str, Any]) -> dict[str, Any]:
        """Enrol a member (the signer makes the TOTP secret and answers it once) or change
        an enrolled one (role, groups, name; the secret stays). During genesis on the
        service's word, ``totp_secret`` importing an existing member's secret; after it only
        with a quorum on the ``staff_change`` content (:meth:`_staff_change_evidence`)."""
        staff_id = _id(params, "staff_id")
        username = _text(params, "username", USERNAME_RE)
        role = params.get("role")
        if role not in ROLES:
            raise _invalid(f"role must be one of {', '.join(ROLES)}")
        groups = sorted(set(_groups(params)))
        imported = params.get("totp_secret")
        evidence = self.state.evidence
        earlier = evidence.staff.get(staff_id)
        body: dict[str, Any] = {
            "staff_id": staff_id,
            "username": username,
            "role": role,
            "groups": groups,
        }
        if evidence.genesis_open:
            body["source"] = "genesis"
        else:
            if imported is not None:
                raise SignerError(
                    wire.NOT_ALLOWED, "a TOTP secret can be imported only while genesis is open"
                )
            if earlier is not None and _tightens(earlier, username, role, groups):
                body["source"] = "tightening"  # less power only: on one word, as disabling
            else:
                action = "update" if earlier is not None else "enrol"
                content = {"kind": STAFF_CHANGE, "action": action, **body}
                body["source"] = "quorum"
                body["evidence"] = self._quorum_evidence(content, excluded=staff_id)
        secret: str | None = None
        if imported is not None:
            secret = _imported_secret(imported)
            body["source"] = "genesis-import"
        elif earlier is None or earlier.sealed_totp is None:
            secret = pyotp.random_base32()
        if secret is not None:
            body["sealed_totp"] = self._seal(staff_id, secret)
        self.record(STAFF, body)
        answer: dict[str, Any] = {"staff_id": staff_id, "enrolled": True}
        if secret is not None and imported is None:
            answer["totp_secret"] = secret  # once: the service shows it and never stores it
            answer["otpauth_uri"] = _uri(secret, username)
        return answer

    def reset_totp(self, params: dict[str, Any]) -> dict[str, Any]:
        """A new authenticator for a member, on the ``policy_change`` quorum of decisions on
        the reset's content (``staff_totp_reset``, naming this member), the member excluded.
        The new secret is answered once; the old one stops working at once."""
        staff_id = _id(params, "staff_id")
        entry = self._member(staff_id)
        content = _content(params)
        if content.get("kind") != TOTP_RESET or content.get("staff_id") != staff_id:
            raise _invalid(f"content must be a {TOTP_RESET} of staff member {staff_id}")
        secret = pyotp.random_base32()
        body = {
            "staff_id": staff_id,
            "username": entry.username,
            "role": entry.role,
            "groups": sorted(entry.groups),
            "sealed_totp": self._seal(staff_id, secret),
            "source": "totp-reset",
            "evidence": self._quorum_evidence(content, excluded=staff_id),
        }
        self.record(STAFF, body)
        self._failures.pop(staff_id, None)
        return {
            "staff_id": staff_id,
            "totp_secret": secret,
            "otpauth_uri": _uri(secret, entry.username),
        }

    def disable_staff(self, params: dict[str, Any]) -> dict[str, Any]:
        """Tightening: at once, on one word; a disabled member's decisions stop counting."""
        staff_id = _id(params, "staff_id")
        entry = self.state.evidence.staff.get(staff_id)
        if entry is not None and entry.enabled:
            self.record(STAFF_DISABLED, {"staff_id": staff_id})
        return {"staff_id": staff_id, "enabled": False}

    def close_genesis(self, params: dict[str, Any]) -> dict[str, Any]:
        """End the trusted enrolment. ``only_if_quorums_met``: only once the enabled
        approvers can meet every quorum of the signer's policy (the service's start)."""
        conditional = params.get("only_if_quorums_met", False)
        if not isinstance(conditional, bool):
            raise _invalid("only_if_quorums_met must be a boolean")
        evidence = self.state.evidence
        if evidence.genesis_open and (not conditional or self.quorums_met()):
            self.record(GENESIS_CLOSED, {})
        return {"genesis_open": evidence.genesis_open}

    def quorums_met(self) -> bool:
        """Whether the enabled approvers of each group can meet every quorum of the policy."""
        policy = self.state.policy
        if policy is None:
            return False
        return all(self._approvers_in(group) >= m for group, m in sorted(_policy_quorums(policy)))

    def _approvers_in(self, group: str) -> int:
        return sum(
            1
            for entry in self.state.evidence.staff.values()
            if entry.enabled and entry.role == "approver" and group in entry.groups
        )

    def _quorum_evidence(self, content: dict[str, Any], *, excluded: str) -> str:
        """The digest of ``content`` once the ``policy_change`` quorum approved it here; each
        digest serves once (a replayed enrolment would hand out a second secret)."""
        policy = self.state.policy
        if policy is None:
            raise SignerError(wire.NOT_ALLOWED, "the signer holds no policy")
        quorum = policy.quorum_for("policy_change")
        digest = content_digest(content)
        if digest in self.state.evidence.consumed:
            raise SignerError(wire.NOT_ALLOWED, f"the evidence {digest} was used already")
        reached = self.state.evidence.quorum_reached_at(
            kind=str(content["kind"]),
            digest=digest,
            group=quorum.group,
            m=quorum.m,
            excluded=frozenset({excluded}),
        )
        if reached is None:
            raise SignerError(
                wire.NOT_ALLOWED,
                f"genesis is closed: this needs {quorum.m} approvals of group {quorum.group!r} "
                f"recorded in the signer on {content['kind']} content {digest}",
            )
        return digest

    # -- step-ups ----------------------------------------------------------------------------

    def check_totp(self, params: dict[str, Any]) -> dict[str, Any]:
        """A member's code, verified with the signer's clock and window; each step once."""
        entry = self._member(_id(params, "staff_id"))
        return {"step": self._accept_totp(entry, params.get("code"))}

    def record_decision(self, params: dict[str, Any]) -> dict[str, Any]:
        """Record an approver's decision on ``content`` after checking their step-up here.

        The digest is computed here from the content (never taken from the request); a
        passkey's assertion must sign ``approval_challenge(digest, decision)``. The same
        decision by the same member on the same content is answered as already recorded
        (a retry after the service lost its commit); the other decision is refused."""
        entry = self._member(_id(params, "staff_id"))
        if entry.role != "approver":
            raise SignerError(wire.NOT_ALLOWED, "only approvers decide")
        kind = params.get("kind")
        content = _content(params)
        if not isinstance(kind, str) or content.get("kind") != kind:
            raise _invalid("content.kind must equal kind")
        decision = params.get("decision")
        if decision not in ("approve", "reject"):
            raise _invalid("decision must be 'approve' or 'reject'")
        totp, passkey = params.get("totp"), params.get("passkey")
        if (totp is None) == (passkey is None):
            raise _invalid("give either totp or passkey")
        digest = content_digest(content)
        earlier = [
            d for d in self.state.evidence.decisions.get(digest, []) if d.staff_id == entry.staff_id
        ]
        if any(d.decision == decision for d in earlier):
            # The same decision again: the service's commit of the first answer failed and the
            # member retries. It is answered as recorded, consuming no code and adding nothing
            # (the ledger already counts it once), so the service can write its row.
            return {"digest": digest, "step": None, "already_recorded": True}
        if earlier:
            raise SignerError(wire.CONFLICT, "this member decided this content already")
        step: int | None = None
        if passkey is not None:
            self._accept_passkey(entry, passkey, digest, decision)
            proof = "passkey"
        else:
            step = self._accept_totp(entry, totp)
            proof = "totp"
        body = {
            "staff_id": entry.staff_id,
            "kind": kind,
            "digest": digest,
            "decision": decision,
            "proof": proof,
        }
        self.record(DECISION, body)
        return {"digest": digest, "step": step}

    def register_passkey(self, params: dict[str, Any]) -> dict[str, Any]:
        """A member's new passkey, with the member's own TOTP code checked here: the API host
        cannot add a passkey of its own to someone's account. The relying party is the
        signer's configuration, not the request's."""
        entry = self._member(_id(params, "staff_id"))
        rp = self._relying_party()
        credential = params.get("credential")
        challenge_hex = params.get("challenge")
        if not isinstance(credential, str) or not isinstance(challenge_hex, str):
            raise _invalid("credential and challenge must be strings")
        try:
            challenge = bytes.fromhex(challenge_hex)
        except ValueError:
            raise _invalid("challenge must be hex") from None
        try:
            stored = verify_registration(rp, credential, challenge=challenge)
        except DomainError as exc:
            raise SignerError(wire.PASSKEY_FAILED, exc.message) from None
        if any(stored.credential_id in e.passkeys for e in self.state.evidence.staff.values()):
            raise SignerError(wire.CONFLICT, "this passkey is registered already")
        self._accept_totp(entry, params.get("totp"))
        self.record(PASSKEY, _passkey_body(entry.staff_id, stored))
        return {"credential_id": stored.credential_id}

    def remove_passkey(self, params: dict[str, Any]) -> dict[str, Any]:
        """Tightening: at once, on one word."""
        staff_id = _id(params, "staff_id")
        credential_id = params.get("credential_id")
        if not isinstance(credential_id, str) or not credential_id:
            raise _invalid("credential_id must be a non-empty string")
        entry = self.state.evidence.staff.get(staff_id)
        if entry is not None and credential_id in entry.passkeys:
            self.record(PASSKEY_REMOVED, {"staff_id": staff_id, "credential_id": credential_id})
        return {"staff_id": staff_id, "credential_id": credential_id, "removed": True}

    # -- helpers -----------------------------------------------------------------------------

    def _member(self, staff_id: str) -> StaffEntry:
        entry = self.state.evidence.staff.get(staff_id)
        if entry is None or not entry.enabled:
            raise SignerError(wire.NOT_ALLOWED, f"staff member {staff_id} is unknown or disabled")
        return entry

    def _relying_party(self) -> RelyingParty:
        rp = self.config.relying_party
        if rp is None:
            raise SignerError(wire.NOT_ALLOWED, "this signer has no relying party for passkeys")
        return rp

    def _throttled(self, staff_id: str) -> None:
        failures = self._failures.get(staff_id)
        now = self.clock()
        if failures is not None and failures.locked_until is not None:
            if failures.locked_until > now:
                until = failures.locked_until.isoformat()
                raise SignerError(wire.THROTTLED, f"too many failed step-ups; wait until {until}")
            self._failures.pop(staff_id)

    def _failed(self, staff_id: str, code: str, message: str) -> SignerError:
        failures = self._failures.setdefault(staff_id, _Failures())
        failures.count += 1
        if failures.count >= self.config.max_failures:
            failures.locked_until = self.clock() + self.config.lockout
        return SignerError(code, message)

    def _accept_totp(self, entry: StaffEntry, code: object) -> int:
        self._throttled(entry.staff_id)
        if entry.sealed_totp is None:
            raise SignerError(wire.NOT_ALLOWED, f"staff member {entry.staff_id} has no TOTP")
        secret = self._unseal(entry.staff_id, entry.sealed_totp)
        step = matching_step(secret, code, self.clock(), self.config.totp_window)
        if step is None:
            raise self._failed(entry.staff_id, wire.STEP_UP_FAILED, "wrong TOTP code")
        if entry.last_totp_step is not None and step <= entry.last_totp_step:
            raise self._failed(
                entry.staff_id, wire.TOTP_REPLAYED, "this TOTP code was already used"
            )
        self.record(TOTP_USED, {"staff_id": entry.staff_id, "step": step})
        self._failures.pop(entry.staff_id, None)
        return step

    def _accept_passkey(
        self, entry: StaffEntry, assertion: object, digest: str, decision: str
    ) -> None:
        rp = self._relying_party()
        self._throttled(entry.staff_id)
        if not isinstance(assertion, str):
            raise _invalid("passkey must be the assertion's JSON text")
        try:
            credential_id = credential_id_of(assertion)
            body = entry.passkeys.get(credential_id)
            if body is None:
                raise self._failed(
                    entry.staff_id,
                    wire.PASSKEY_FAILED,
                    "this passkey may not approve for you (not registered, or removed)",
                )
            stored = StoredPasskey(credential_id, body["public_key"], int(body["sign_count"]))
            new_count = verify_approval(
                rp, stored, assertion, expected_challenge=approval_challenge(digest, decision)
            )
        except InvalidInput as exc:
            raise _invalid(exc.message) from None
        except DomainError as exc:
            raise self._failed(entry.staff_id, wire.PASSKEY_FAILED, exc.message) from None
        stored = StoredPasskey(credential_id, stored.public_key, new_count)
        self.record(PASSKEY, _passkey_body(entry.staff_id, stored))
        self._failures.pop(entry.staff_id, None)

    def _seal(self, staff_id: str, secret: str) -> str:
        nonce, sealed = self.vault.encrypt(secret.encode(), _totp_aad(staff_id))
        return base64.b64encode(nonce + sealed).decode()

    def _unseal(self, staff_id: str, sealed: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self.vault.decrypt(
                raw[:NONCE_SIZE], raw[NONCE_SIZE:], _totp_aad(staff_id)
            ).decode()
        except (SeedDecryptionError, ValueError, binascii.Error):
            raise SignerError(
                wire.INTERNAL, f"the TOTP secret of staff member {staff_id} does not open"
            ) from None


def matching_step(secret: str, code: object, now: datetime, window: int) -> int | None:
    """The highest time step within ``window`` of ``now`` whose code is ``code``, or None."""
    if not (isinstance(code, str) and len(code) == TOTP_DIGITS and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    current = int(now.timestamp()) // TOTP_PERIOD_S
    for step in range(current + window, current - window - 1, -1):
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD_S), code):
            return step
    return None


def _tightens(earlier: StaffEntry, username: str, role: str, groups: list[str]) -> bool:
    """Whether a change of an enrolled, enabled member only takes power away: the same name,
    groups only removed, and the role kept or an approver's given up (the signer counts
    decisions of approvers only). No change at all is not one (it needs its quorum)."""
    fewer_groups = set(groups) < earlier.groups
    role_given_up = role != earlier.role and earlier.role == "approver"
    return (
        earlier.enabled
        and username == earlier.username
        and set(groups) <= earlier.groups
        and (role == earlier.role or role_given_up)
        and (fewer_groups or role_given_up)
    )


def _policy_quorums(policy: PolicyDocument) -> set[tuple[str, int]]:
    quorums = {(tier.group, tier.m) for tier in policy.approval_tiers}
    for action in GOVERNED_ACTIONS:
        quorum = policy.quorum_for(action)
        quorums.add((quorum.group, quorum.m))
    if policy.allowlist is not None and policy.allowlist.approval is not None:
        quorums.add((policy.allowlist.approval.group, policy.allowlist.approval.m))
    return quorums


def _passkey_body(staff_id: str, stored: StoredPasskey) -> dict[str, Any]:
    return {
        "staff_id": staff_id,
        "credential_id": stored.credential_id,
        "public_key": stored.public_key,
        "sign_count": stored.sign_count,
    }


def _totp_aad(staff_id: str) -> bytes:
    # Bound to the member: a sealed secret copied onto another member's record does not open.
    return encode_message("signer-staff-totp/v1", staff_id)


def _uri(secret: str, username: str) -> str:
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    return totp.provisioning_uri(name=username, issuer_name=ISSUER)


def _imported_secret(value: object) -> str:
    if not isinstance(value, str):
        raise _invalid("totp_secret must be a base32 string")
    text = value.strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise _invalid("totp_secret must be a base32 string") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise _invalid("totp_secret is too short")
    return text


def _content(params: dict[str, Any]) -> dict[str, Any]:
    content = params.get("content")
    if not isinstance(content, dict):
        raise _invalid("content must be an object")
    if len(canonical_json(content)) > MAX_CONTENT_BYTES:
        raise _invalid("content is too large")
    return content


def _id(params: dict[str, Any], key: str) -> str:
    return _text(params, key, ID_RE)


def _text(params: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise _invalid(f"{key} is missing or malformed")
    return value


def _groups(params: dict[str, Any]) -> list[str]:
    groups = params.get("groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, str) and GROUP_RE.match(g) for g in groups
    ):
        raise _invalid("groups must be a list of group names")
    return groups


def _invalid(message: str) -> SignerError:
    return SignerError(wire.INVALID_REQUEST, message)
