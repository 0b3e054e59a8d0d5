"""Sealing secrets under the KEK: the signer side's interfaces.

Two kinds of secret are kept in the database only sealed (AES-256-GCM, each under its own KEK
subkey): hot-wallet seeds (:class:`SeedVault`, used by :mod:`walletsvc.keys.keystore`) and
staff TOTP secrets (:class:`TotpSealer`). Whoever holds these objects can open the secrets;
the API side needs neither (it only tags and checks rows), which is the seam along which the
signer becomes its own process. Errors never carry plaintext.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import SealedSecretError, SeedDecryptionError
from .integrity import encode_message

NONCE_SIZE = 12  # random 96-bit GCM nonces: each key seals few secrets, far from reuse risk


class SeedVault(Protocol):
    """Encrypts and decrypts seed entropy; ``key_id`` names the KEK behind it."""

    @property
    def key_id(self) -> str: ...

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext with tag) of ``plaintext`` bound to ``aad``."""
        ...

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; SeedDecryptionError if it does not authenticate under ``aad``."""
        ...


class TotpSealer(Protocol):
    """Seals a staff member's TOTP secret to their staff id, and opens it again."""

    def seal(self, staff_id: str, secret: str) -> str:
        """The sealed secret, as stored in ``staff.totp_secret_enc``."""
        ...

    def unseal(self, staff_id: str, sealed: str) -> str:
        """The secret; SealedSecretError if it was altered or sealed for another staff id."""
        ...


class WebhookSecretSealer(Protocol):
    """Seals a webhook's signing secret to the webhook's id, and opens it to sign a delivery."""

    def seal(self, webhook_id: str, secret: str) -> str:
        """The sealed secret, as stored in ``webhooks.secret_sealed``."""
        ...

    def unseal(self, webhook_id: str, sealed: str) -> str:
        """The secret; SealedSecretError if it was altered or sealed for another webhook."""
        ...


class _Sealed:
    """Never shows, pickles or copies its key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key must be 32 bytes")
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<key hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a sealing key holder cannot be pickled or copied")


class AesGcmSeedVault(_Sealed):
    """AES-256-GCM under the KEK's seed-encryption subkey."""

    __slots__ = ("_key_id",)

    def __init__(self, key: bytes, key_id: str) -> None:
        super().__init__(key)
        self._key_id = key_id

    def __repr__(self) -> str:
        return f"AesGcmSeedVault(kek={self._key_id})"

    @property
    def key_id(self) -> str:
        return self._key_id

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise SeedDecryptionError("the seed ciphertext does not authenticate") from None


class AesGcmTotpSealer(_Sealed):
    """AES-256-GCM under the KEK's staff-TOTP subkey; stored as base64(nonce + ciphertext)."""

    __slots__ = ()

    def seal(self, staff_id: str, secret: str) -> str:
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, secret.encode(), _totp_aad(staff_id))
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, staff_id: str, sealed: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            plain = self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], _totp_aad(staff_id))
        except (InvalidTag, ValueError, binascii.Error):
            raise SealedSecretError("a staff TOTP secret fails its integrity check") from None
        return plain.decode()


class AesGcmWebhookSealer(_Sealed):
    """AES-256-GCM under the KEK's webhook subkey; stored as base64(nonce + ciphertext)."""

    __slots__ = ()

    def seal(self, webhook_id: str, secret: str) -> str:
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, secret.encode(), _webhook_aad(webhook_id))
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, webhook_id: str, sealed: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            aad = _webhook_aad(webhook_id)
            plain = self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], aad)
        except (InvalidTag, ValueError, binascii.Error):
            raise SealedSecretError("a webhook secret fails its integrity check") from None
        return plain.decode()


def _webhook_aad(webhook_id: str) -> bytes:
    return encode_message("webhook-secret/v1", webhook_id)


def _totp_aad(staff_id: str) -> bytes:
    # Bound to the row id: a secret copied onto another staff row does not open.
    return encode_message("staff-totp/v1", staff_id)
