"""Passkey verification (walletsvc.keys.passkeys): what an approval's signature binds."""

from __future__ import annotations

import pytest

from tests.soft_authenticator import SoftAuthenticator
from walletsvc.domain.errors import InvalidInput, StepUpFailed
from walletsvc.keys.passkeys import (
    RelyingParty,
    StoredPasskey,
    approval_challenge,
    verify_approval,
    verify_registration,
)

RP = RelyingParty(rp_id="treasury.example", origin="https://treasury.example")
DIGEST = "11" * 32
OTHER_DIGEST = "22" * 32


def _registered(authenticator: SoftAuthenticator) -> StoredPasskey:
    challenge = b"registration challenge of a session"
    return verify_registration(RP, authenticator.register(challenge), challenge=challenge)


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(RP.rp_id, RP.origin)


def test_an_assertion_over_the_digest_and_decision_verifies_and_counts(
    device: SoftAuthenticator,
) -> None:
    stored = _registered(device)
    challenge = approval_challenge(DIGEST, "approve")
    assert verify_approval(RP, stored, device.assert_(challenge), expected_challenge=challenge) == 1


@pytest.mark.parametrize(
    ("digest", "decision"), [(OTHER_DIGEST, "approve"), (DIGEST, "reject")], ids=["content", "verb"]
)
def test_a_signature_cannot_be_moved_to_other_content_or_another_decision(
    device: SoftAuthenticator, digest: str, decision: str
) -> None:
    stored = _registered(device)
    signed = device.assert_(approval_challenge(DIGEST, "approve"))
    with pytest.raises(StepUpFailed):
        verify_approval(RP, stored, signed, expected_challenge=approval_challenge(digest, decision))


def test_another_origin_an_unverified_user_or_a_counter_going_back_is_refused(
    device: SoftAuthenticator,
) -> None:
    stored = _registered(device)
    challenge = approval_challenge(DIGEST, "approve")
    phished = device.assert_(challenge, origin="https://treasury.example.evil")
    with pytest.raises(StepUpFailed, match="origin"):
        verify_approval(RP, stored, phished, expected_challenge=challenge)
    used = StoredPasskey(stored.credential_id, stored.public_key, sign_count=5)
    with pytest.raises(StepUpFailed):
        verify_approval(
            RP, used, device.assert_(challenge, counter=5), expected_challenge=challenge
        )
    device.user_verified = False
    with pytest.raises(StepUpFailed):
        verify_approval(RP, stored, device.assert_(challenge), expected_challenge=challenge)


def test_an_assertion_of_another_passkey_is_refused(device: SoftAuthenticator) -> None:
    stored = _registered(device)
    other = SoftAuthenticator(RP.rp_id, RP.origin)
    challenge = approval_challenge(DIGEST, "approve")
    with pytest.raises(StepUpFailed, match="not from this passkey"):
        verify_approval(RP, stored, other.assert_(challenge), expected_challenge=challenge)


def test_registration_checks_its_challenge_and_bad_input_names_the_field(
    device: SoftAuthenticator,
) -> None:
    with pytest.raises(StepUpFailed):
        verify_registration(RP, device.register(b"one"), challenge=b"another")
    with pytest.raises(InvalidInput) as bad:
        verify_registration(RP, "not json", challenge=b"x")
    assert bad.value.field == "passkey"
    with pytest.raises(InvalidInput) as bad:
        approval_challenge("zz", "approve")
    assert bad.value.field == "digest"
