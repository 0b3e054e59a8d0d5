"""Passkeys (WebAuthn): registering one, and checking an approval signed with one.

No framework and no database here: the functions take the stored credential and the expected
challenge, so that the separate signer process can verify an approval itself with exactly
the code the service uses. The cryptography and the WebAuthn rules (origin, RP id hash,
flags, signature counter, COSE keys) are the `webauthn` library's (py_webauthn, Duo Labs);
nothing of it is re-implemented.

An approval's challenge is the request's content digest bound to the decision:
SHA-256("walletsvc-approval-v1" 0x00 decision 0x00 digest). The authenticator signs it, so a
compromised API can neither move the signature to other content nor turn a "reject" into an
"approve"; and it can be recomputed by whoever holds the digest, with no server state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from walletsvc.domain.errors import InvalidInput, StepUpFailed

APPROVAL_LABEL = b"walletsvc-approval-v1"
DECISIONS = ("approve", "reject")
FIELD = "passkey"
# A credential's JSON is a few hundred bytes (more with attestation): refuse megabytes early.
MAX_CREDENTIAL_JSON = 64 * 1024


@dataclass(frozen=True)
class RelyingParty:
    """Who the passkeys belong to: the console's host name (RP id) and its exact origin."""

    rp_id: str
    origin: str
    name: str = "walletsvc"


@dataclass(frozen=True)
class StoredPasskey:
    """What the service keeps of a passkey (base64url): enough to check its signatures."""

    credential_id: str
    public_key: str
    sign_count: int


def approval_challenge(digest: str, decision: str) -> bytes:
    """The WebAuthn challenge of deciding ``decision`` on content whose digest is ``digest``."""
    if decision not in DECISIONS:
        raise InvalidInput("decision must be 'approve' or 'reject'", field="decision")
    try:
        digest_bytes = bytes.fromhex(digest)
    except ValueError:
        raise InvalidInput("the digest is not hex", field="digest") from None
    if len(digest_bytes) != 32:
        raise InvalidInput("the digest is not a SHA-256 digest", field="digest")
    return hashlib.sha256(
        APPROVAL_LABEL + b"\x00" + decision.encode() + b"\x00" + digest_bytes
    ).digest()


# --- registration ----------------------------------------------------------------------------


def registration_options(
    rp: RelyingParty,
    *,
    user_id: str,
    username: str,
    challenge: bytes,
    existing: list[str],
) -> str:
    """The JSON for navigator.credentials.create(): a passkey that verifies its user."""
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_id=user_id.encode(),
        user_name=username,
        challenge=challenge,
        exclude_credentials=[_descriptor(c) for c in existing],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
    )
    return str(options_to_json(options))


def verify_registration(rp: RelyingParty, credential: str, *, challenge: bytes) -> StoredPasskey:
    """Check the authenticator's answer to ``registration_options``; what to store."""
    try:
        verified = verify_registration_response(
            credential=_parsed(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise StepUpFailed(f"the passkey could not be registered: {exc}", field=FIELD) from None
    return StoredPasskey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
    )


# --- approvals -------------------------------------------------------------------------------


def approval_options(rp: RelyingParty, *, challenge: bytes, allowed: list[str]) -> str:
    """The JSON for navigator.credentials.get() when deciding with a passkey."""
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        allow_credentials=[_descriptor(c) for c in allowed],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return str(options_to_json(options))


def credential_id_of(assertion: str) -> str:
    """Which credential an assertion claims to be from (then look it up, then verify)."""
    raw = _parsed(assertion).get("rawId") or _parsed(assertion).get("id")
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("the passkey assertion has no credential id", field=FIELD)
    try:
        return bytes_to_base64url(base64url_to_bytes(raw))
    except ValueError:
        raise InvalidInput("the passkey credential id is not base64url", field=FIELD) from None


def verify_approval(
    rp: RelyingParty, stored: StoredPasskey, assertion: str, *, expected_challenge: bytes
) -> int:
    """Verify an assertion from ``stored`` over ``expected_challenge`` (approval_challenge).

    User verification is required (a PIN or biometric, not only a touch). Returns the new
    signature counter to store; raises StepUpFailed if anything does not hold.
    """
    if credential_id_of(assertion) != stored.credential_id:
        raise StepUpFailed("the assertion is not from this passkey", field=FIELD)
    try:
        verified = verify_authentication_response(
            credential=_parsed(assertion),
            expected_challenge=expected_challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(stored.public_key),
            credential_current_sign_count=stored.sign_count,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise StepUpFailed(f"the passkey signature does not verify: {exc}", field=FIELD) from None
    return int(verified.new_sign_count)


# --- helpers ---------------------------------------------------------------------------------


def _descriptor(credential_id: str) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(credential_id))


def _parsed(credential: str) -> dict[str, Any]:
    if len(credential) > MAX_CREDENTIAL_JSON:
        raise InvalidInput("the passkey credential is too large", field=FIELD)
    try:
        value = json.loads(credential)
    except ValueError:
        raise InvalidInput("the passkey credential is not JSON", field=FIELD) from None
    if not isinstance(value, dict):
        raise InvalidInput("the passkey credential is not a JSON object", field=FIELD)
    return value
