"""The key-encryption key (KEK): 32 random bytes in a file outside the database.

A stolen or edited database holds only ciphertexts, xpubs and MAC tags; without this file it
can neither decrypt a seed nor forge a tag. Every use of the KEK goes through a subkey derived
with HKDF-SHA256 under a distinct label, so the seed-encryption key, the row-MAC key and the
audit-chain key are independent even though one file backs them all.

Only the composition root and the CLI's key-file commands hold a Kek. They pass on the narrow
object each use needs: :meth:`Kek.row_tagger` and :meth:`Kek.audit_key` (the service side),
:meth:`Kek.seed_vault` and :meth:`Kek.totp_sealer` (the signer side).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KekFileError
from .integrity import HmacRowTagger, RowTagger
from .sealing import (
    AesGcmSeedVault,
    AesGcmTotpSealer,
    AesGcmWebhookSealer,
    SeedVault,
    TotpSealer,
    WebhookSecretSealer,
)

KEK_SIZE = 32
MAX_PURPOSE_LENGTH = 64

# HKDF "info" labels. Public subkeys live under their own prefix, so no purpose string passed to
# Kek.subkey() can ever produce the seed-encryption key or the key id.
_SUBKEY_INFO_PREFIX = b"walletsvc/kek/subkey/v1/"
_SEED_AEAD_INFO = b"walletsvc/kek/seed-aead/v1"
_KEY_ID_INFO = b"walletsvc/kek/key-id/v1"

# Purposes of the public subkeys: one key per use, so a tag made for one use is useless in another.
ROW_MAC = "row-mac"
AUDIT_CHAIN = "audit-chain"
STAFF_TOTP = "staff-totp"
WEBHOOK_SEALING = "webhook-secret"


def _hkdf(key: bytes | bytearray, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(bytes(key))


class Kek:
    """The loaded key-encryption key. Its repr shows only a public key id, never key bytes.

    ``key_id`` is a short HKDF-derived check value: it tells operators (and error messages)
    which KEK encrypted a seed without revealing anything useful about the key.
    """

    __slots__ = ("_key", "_subkeys", "key_id")

    def __init__(self, key: bytes | bytearray) -> None:
        if len(key) != KEK_SIZE:
            raise KekFileError(f"a KEK must be exactly {KEK_SIZE} bytes, got {len(key)}")
        self._key = bytearray(key)
        self._subkeys: dict[str, bytes] = {}
        self.key_id: str = _hkdf(self._key, _KEY_ID_INFO)[:4].hex()

    def __repr__(self) -> str:
        return f"Kek(id={self.key_id})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would write the raw key to wherever the pickle goes (caches, queues, logs).
        raise TypeError("a Kek cannot be pickled or copied")

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. "row-mac", "audit-chain"), derived by HKDF."""
        _check_purpose(purpose)
        key = self._subkeys.get(purpose)
        if key is None:
            key = _hkdf(self._key, _SUBKEY_INFO_PREFIX + purpose.encode("ascii"))
            self._subkeys[purpose] = key
        return key

    def mac(self, purpose: str, message: bytes) -> str:
        """Hex HMAC-SHA256 of ``message`` under the ``purpose`` subkey."""
        return hmac.new(self.subkey(purpose), message, hashlib.sha256).hexdigest()

    def verify_mac(self, purpose: str, message: bytes, tag: str) -> bool:
        """Constant-time check of a tag made by :meth:`mac`. Malformed tags are just False."""
        if not isinstance(tag, str):
            return False
        try:
            given = tag.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(self.mac(purpose, message).encode("ascii"), given)

    # The narrow interfaces handed out by the composition root. The service side gets the row
    # tagger and the audit key; the signer side gets the seed vault and the TOTP sealer.

    def row_tagger(self) -> RowTagger:
        """Tags and checks governed rows (walletsvc.db.tags) under the row-MAC subkey."""
        return HmacRowTagger(self.subkey(ROW_MAC))

    def audit_key(self) -> bytes:
        """The key of the database's HMAC-chained audit log."""
        return self.subkey(AUDIT_CHAIN)

    def seed_vault(self) -> SeedVault:
        """Encrypts and decrypts hot-wallet seeds (walletsvc.keys.keystore)."""
        return AesGcmSeedVault(_hkdf(self._key, _SEED_AEAD_INFO), self.key_id)

    def totp_sealer(self) -> TotpSealer:
        """Seals staff TOTP secrets under their own subkey."""
        return AesGcmTotpSealer(self.subkey(STAFF_TOTP))

    def webhook_sealer(self) -> WebhookSecretSealer:
        """Seals webhook signing secrets under their own subkey (the dispatcher opens them)."""
        return AesGcmWebhookSealer(self.subkey(WEBHOOK_SEALING))

    def wipe(self) -> None:
        """Overwrite the key bytes we own; the Kek is unusable afterwards."""
        for i in range(len(self._key)):
            self._key[i] = 0
        self._subkeys.clear()


def _check_purpose(purpose: str) -> None:
    if (
        not isinstance(purpose, str)
        or not purpose
        or len(purpose) > MAX_PURPOSE_LENGTH
        or not purpose.isascii()
        or not purpose.isprintable()
    ):
        raise ValueError(
            f"a subkey purpose must be 1-{MAX_PURPOSE_LENGTH} printable ASCII characters"
        )


def load_kek(path: str | os.PathLike[str]) -> Kek:
    """Read the KEK file: exactly 32 raw bytes, not accessible to group or others.

    The permission check runs on the opened descriptor, so a file swapped between check and
    read cannot slip through. Symlinks are followed (secret mounts use them).
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KekFileError(f"KEK file {p} does not exist") from None
    except PermissionError:
        raise KekFileError(f"KEK file {p} is not readable by this process") from None
    except OSError as exc:
        raise KekFileError(f"cannot open KEK file {p}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KekFileError(f"KEK file {p} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KekFileError(
                f"KEK file {p} is accessible by group or others (mode {mode:04o}); "
                f"restrict it with: chmod 600 {p}"
            )
        data = bytearray(os.read(fd, KEK_SIZE + 64))
    finally:
        os.close(fd)
    try:
        if len(data) != KEK_SIZE:
            hint = ""
            if len(data) in (2 * KEK_SIZE, 2 * KEK_SIZE + 1):
                hint = " (it looks hex-encoded; the file must hold the 32 raw bytes)"
            raise KekFileError(
                f"KEK file {p} must contain exactly {KEK_SIZE} bytes, found {len(data)}{hint}"
            )
        return Kek(data)
    finally:
        for i in range(len(data)):
            data[i] = 0


def create_dev_kek(path: str | os.PathLike[str]) -> Kek:
    """Create a new random KEK file with mode 0600. Refuses to overwrite an existing file.

    For development and first setup; production KEKs come from the operator's secret store.
    """
    p = Path(path)
    key = bytearray(os.urandom(KEK_SIZE))
    try:
        try:
            fd = os.open(
                p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
            )
        except FileExistsError:
            raise KekFileError(f"KEK file {p} already exists; refusing to overwrite it") from None
        except OSError as exc:
            raise KekFileError(f"cannot create KEK file {p}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
            written = os.write(fd, key)
            if written != KEK_SIZE:
                raise KekFileError(f"short write creating KEK file {p}")
            os.fsync(fd)
        finally:
            os.close(fd)
        return Kek(key)
    finally:
        for i in range(len(key)):
            key[i] = 0
