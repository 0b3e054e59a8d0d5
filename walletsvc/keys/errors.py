"""Errors of the key layer. Their messages name paths, ids and reasons, never key material."""

from __future__ import annotations

from walletsvc.domain.errors import InvalidInput


class KeyMaterialError(Exception):
    """A key, seed or KEK could not be loaded or used. The message is safe to log."""


class KekFileError(KeyMaterialError):
    """The KEK file is missing, has the wrong size or is readable by others."""


class SeedDecryptionError(KeyMaterialError):
    """An encrypted seed does not decrypt: wrong KEK, tampered ciphertext or wrong wallet/epoch."""


class InvalidXpub(InvalidInput):
    code = "invalid_xpub"


class InvalidMnemonic(InvalidInput):
    code = "invalid_mnemonic"


class SealedSecretError(KeyMaterialError):
    """A sealed secret does not open: wrong KEK, altered ciphertext or bound to another owner."""
