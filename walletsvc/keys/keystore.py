"""Hot-wallet seeds: created or restored once, stored only encrypted under the KEK.

The database column holds ``EncryptedSeed.to_string()``: AES-256-GCM over the BIP39 entropy,
with associated data binding the format version, wallet name, key epoch and network. A
ciphertext copied to another wallet or epoch row, or to another network, fails authentication
instead of silently signing with the wrong key. Next to it the database keeps the account
xpub and master fingerprint, which are public.

Only :func:`decrypt_seed` (called by the signer) ever turns a ciphertext back into a seed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn

from bip_utils import Bip39Languages, Bip39MnemonicDecoder, Bip39MnemonicEncoder

from walletsvc.domain.network import Network

from .errors import InvalidMnemonic, SeedDecryptionError
from .hd import AccountKeys, account_path_str
from .integrity import canonical_json
from .sealing import SeedVault

FORMAT_VERSION = 1
_PREFIX = "wsseed"
_NONCE_SIZE = 12
_ENTROPY_SIZE = 32  # 256 bits: a 24-word mnemonic
_TAG_SIZE = 16
_ALLOWED_ENTROPY_SIZES = (16, 20, 24, 28, 32)  # 12..24 words, accepted on restore


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _wipe(buf: bytearray) -> None:
    for i in range(len(buf)):
        buf[i] = 0


@dataclass(frozen=True)
class EncryptedSeed:
    """An AES-256-GCM ciphertext of a seed's BIP39 entropy, as stored in the database.

    ``kek_id`` is the public id of the KEK that encrypted it, used for a clear error when the
    wrong KEK file is loaded. Serialise with :meth:`to_string` / :meth:`to_bytes`.
    """

    kek_id: str
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag
    format_version: int = FORMAT_VERSION

    def __repr__(self) -> str:
        return (
            f"EncryptedSeed(v{self.format_version}, kek_id={self.kek_id}, "
            f"{len(self.ciphertext)} bytes)"
        )

    def to_string(self) -> str:
        """``wsseed:v1:<kek id>:<nonce b64url>:<ciphertext b64url>``: one opaque DB column."""
        return ":".join(
            (
                _PREFIX,
                f"v{self.format_version}",
                self.kek_id,
                _b64e(self.nonce),
                _b64e(self.ciphertext),
            )
        )

    def to_bytes(self) -> bytes:
        return self.to_string().encode("ascii")

    @classmethod
    def from_string(cls, text: str) -> EncryptedSeed:
        parts = text.split(":") if isinstance(text, str) else []
        if len(parts) != 5 or parts[0] != _PREFIX:
            raise SeedDecryptionError("not an encrypted walletsvc seed")
        if parts[1] != f"v{FORMAT_VERSION}":
            raise SeedDecryptionError(f"unsupported encrypted-seed format {parts[1]!r}")
        kek_id = parts[2]
        if len(kek_id) != 8 or any(c not in "0123456789abcdef" for c in kek_id):
            raise SeedDecryptionError("encrypted seed has a malformed KEK id")
        try:
            nonce, ciphertext = _b64d(parts[3]), _b64d(parts[4])
        except (binascii.Error, ValueError):
            raise SeedDecryptionError("encrypted seed is not valid base64") from None
        if len(nonce) != _NONCE_SIZE or len(ciphertext) - _TAG_SIZE not in _ALLOWED_ENTROPY_SIZES:
            raise SeedDecryptionError("encrypted seed has the wrong length")
        return cls(kek_id=kek_id, nonce=nonce, ciphertext=ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedSeed:
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise SeedDecryptionError("not an encrypted walletsvc seed") from None
        return cls.from_string(text)


class MnemonicBackup:
    """The mnemonic words of a new seed, for the operator's paper backup: readable ONCE.

    ``reveal()`` returns the words and forgets them; repr/str never show them.
    """

    __slots__ = ("_words", "word_count")

    def __init__(self, words: list[str]) -> None:
        self._words: list[str] | None = list(words)
        self.word_count = len(words)

    def reveal(self) -> tuple[str, ...]:
        """The words, once. A second call raises: they must not linger in memory or logs."""
        if self._words is None:
            raise RuntimeError("the mnemonic was already revealed")
        words, self._words = tuple(self._words), None
        return words

    @property
    def revealed(self) -> bool:
        return self._words is None

    def __repr__(self) -> str:
        return f"MnemonicBackup(<{self.word_count} words hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a mnemonic cannot be pickled or copied")


@dataclass(frozen=True)
class NewSeed:
    """Everything ``walletsvc init``/restore stores or shows for one wallet epoch."""

    wallet: str
    epoch: int
    network: Network
    encrypted: EncryptedSeed
    account_xpub: str  # standard BIP32 form: xpub (mainnet) / tpub (test networks)
    account_xpub_slip132: str  # SLIP-132 BIP84 form: zpub / vpub
    master_fingerprint: str  # 8 hex chars, as in output descriptors
    account_path: str  # m/84'/0'/0' or m/84'/1'/0'
    mnemonic: MnemonicBackup = field(repr=False, compare=False)

    @property
    def descriptor(self) -> str:
        """Watch-only descriptor of the receive chain (without checksum)."""
        origin = self.master_fingerprint + self.account_path[1:].replace("'", "h")
        return f"wpkh([{origin}]{self.account_xpub}/0/*)"


class SeedSecret:
    """A decrypted BIP39 seed (64 bytes), for the signer only. Use as a context manager.

    The bytes live in a bytearray that :meth:`wipe` (and leaving the ``with`` block) zeroes.
    """

    __slots__ = ("_seed", "_wiped")

    def __init__(self, seed: bytearray) -> None:
        self._seed = seed
        self._wiped = False

    @property
    def seed(self) -> bytearray:
        if self._wiped:
            raise RuntimeError("seed used after wipe()")
        return self._seed

    def wipe(self) -> None:
        _wipe(self._seed)
        self._wiped = True

    def __enter__(self) -> SeedSecret:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return "SeedSecret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a seed cannot be pickled or copied")


def _aad(wallet: str, epoch: int, network: Network) -> bytes:
    _check_binding(wallet, epoch, network)
    # Canonical JSON is an unambiguous encoding (no "ab"+"c" == "a"+"bc" confusion). It is
    # ASCII, and for these plain fields byte-identical to the format's original AAD.
    return canonical_json(
        {
            "format": f"{_PREFIX}/v{FORMAT_VERSION}",
            "wallet": wallet,
            "epoch": epoch,
            "network": network.value,
        }
    )


def _check_binding(wallet: str, epoch: int, network: Network) -> None:
    if not isinstance(wallet, str) or not wallet:
        raise ValueError("wallet must be a non-empty string")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError("epoch must be a non-negative integer")
    if not isinstance(network, Network):
        raise ValueError("network must be a Network")


def _words(entropy: bytes | bytearray) -> list[str]:
    return list(Bip39MnemonicEncoder(Bip39Languages.ENGLISH).Encode(bytes(entropy)).ToList())


def _bip39_seed(entropy: bytes | bytearray, passphrase: str = "") -> bytearray:
    """BIP39 seed: PBKDF2-HMAC-SHA512(NFKD mnemonic, "mnemonic" + passphrase, 2048)."""
    mnemonic = bytearray(unicodedata.normalize("NFKD", " ".join(_words(entropy))).encode("utf-8"))
    try:
        salt = unicodedata.normalize("NFKD", "mnemonic" + passphrase).encode("utf-8")
        return bytearray(hashlib.pbkdf2_hmac("sha512", mnemonic, salt, 2048))
    finally:
        _wipe(mnemonic)


def _encrypt(vault: SeedVault, entropy: bytes | bytearray, aad: bytes) -> EncryptedSeed:
    nonce, ciphertext = vault.encrypt(bytes(entropy), aad)
    return EncryptedSeed(kek_id=vault.key_id, nonce=nonce, ciphertext=ciphertext)


def _new_seed(
    vault: SeedVault, entropy: bytearray, *, wallet: str, epoch: int, network: Network
) -> NewSeed:
    aad = _aad(wallet, epoch, network)
    encrypted = _encrypt(vault, entropy, aad)
    seed = _bip39_seed(entropy)
    keys = AccountKeys(seed, network)
    try:
        xpub = keys.account_xpub()
        fingerprint = keys.master_fingerprint.hex()
    finally:
        keys.wipe()
        _wipe(seed)
    return NewSeed(
        wallet=wallet,
        epoch=epoch,
        network=network,
        encrypted=encrypted,
        account_xpub=xpub.xpub,
        account_xpub_slip132=xpub.slip132,
        master_fingerprint=fingerprint,
        account_path=account_path_str(network),
        mnemonic=MnemonicBackup(_words(entropy)),
    )


def generate_seed(vault: SeedVault, *, wallet: str, epoch: int, network: Network) -> NewSeed:
    """Create a fresh 24-word seed for ``wallet``/``epoch`` and encrypt it in ``vault``."""
    _check_binding(wallet, epoch, network)
    entropy = bytearray(os.urandom(_ENTROPY_SIZE))
    try:
        return _new_seed(vault, entropy, wallet=wallet, epoch=epoch, network=network)
    finally:
        _wipe(entropy)


def import_mnemonic(
    vault: SeedVault, mnemonic: str, *, wallet: str, epoch: int, network: Network
) -> NewSeed:
    """Restore a seed from its BIP39 words (12-24, English, no passphrase) and encrypt it."""
    _check_binding(wallet, epoch, network)
    if not isinstance(mnemonic, str):
        raise InvalidMnemonic("mnemonic must be a string of words", field="mnemonic")
    normalised = " ".join(unicodedata.normalize("NFKD", mnemonic).lower().split())
    try:
        decoded = Bip39MnemonicDecoder(Bip39Languages.ENGLISH).Decode(normalised)
    except Exception:
        # bip-utils' messages can quote a word of the mnemonic: never chain or repeat them.
        raise InvalidMnemonic(
            "mnemonic is not a valid English BIP39 phrase (unknown word, wrong word count "
            "or bad checksum)",
            field="mnemonic",
        ) from None
    entropy = bytearray(decoded)
    try:
        return _new_seed(vault, entropy, wallet=wallet, epoch=epoch, network=network)
    finally:
        _wipe(entropy)


def decrypt_seed(
    vault: SeedVault, encrypted: EncryptedSeed, *, wallet: str, epoch: int, network: Network
) -> SeedSecret:
    """Decrypt a seed for signing (walletsvc.keys.signer only). Wipe it when done.

    Raises SeedDecryptionError (no key material in it) for the wrong KEK, a tampered
    ciphertext, or a ciphertext that belongs to another wallet, epoch or network.
    """
    entropy = _decrypt_entropy(vault, encrypted, wallet=wallet, epoch=epoch, network=network)
    try:
        return SeedSecret(_bip39_seed(entropy))
    finally:
        _wipe(entropy)


def recovery_words(
    vault: SeedVault, encrypted: EncryptedSeed, *, wallet: str, epoch: int, network: Network
) -> MnemonicBackup:
    """The BIP39 words of a ciphertext, readable once: how a seed sealed under the service's
    KEK before the signer held seeds (key_epochs.encrypted_seed) moves into the signer
    (walletsvc.bootstrap.seed_import). Same errors as :func:`decrypt_seed`."""
    entropy = _decrypt_entropy(vault, encrypted, wallet=wallet, epoch=epoch, network=network)
    try:
        return MnemonicBackup(_words(entropy))
    finally:
        _wipe(entropy)


def _decrypt_entropy(
    vault: SeedVault, encrypted: EncryptedSeed, *, wallet: str, epoch: int, network: Network
) -> bytearray:
    aad = _aad(wallet, epoch, network)
    if encrypted.format_version != FORMAT_VERSION:
        raise SeedDecryptionError(f"unsupported encrypted-seed format v{encrypted.format_version}")
    if encrypted.kek_id != vault.key_id:
        raise SeedDecryptionError(
            f"seed of wallet {wallet!r} epoch {epoch} was encrypted under KEK {encrypted.kek_id}, "
            f"but the loaded KEK is {vault.key_id}"
        )
    try:
        plaintext = vault.decrypt(encrypted.nonce, encrypted.ciphertext, aad)
    except SeedDecryptionError:
        raise SeedDecryptionError(
            f"seed of wallet {wallet!r} epoch {epoch} on {network.value} does not authenticate: "
            "the ciphertext was altered or belongs to another wallet, epoch or network"
        ) from None
    entropy = bytearray(plaintext)
    del plaintext
    if len(entropy) not in _ALLOWED_ENTROPY_SIZES:
        _wipe(entropy)
        raise SeedDecryptionError("decrypted seed has an invalid length")
    return entropy
