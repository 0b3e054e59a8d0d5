"""The signer's unlocked keys: each seed decrypted once, each key derived once per process.

Signing 1,000 inputs used to decrypt the seed and run a BIP32 derivation (an HMAC-SHA512 and
an EC multiplication) for every input of every transaction: about a third of the signing time
(docs/performance.md). The hot signer now keeps, per unlocked key epoch, the private account
node and every key it has derived, with the key's scriptPubKey and BIP143 scriptCode, until
:meth:`KeyCache.wipe`.

An epoch is identified by (wallet, network, epoch, the encrypted seed it was decrypted from):
a call that hands the signer another ciphertext for the same epoch (a swapped or foreign seed
from the database) misses the cache and must decrypt, and so fails exactly as it did before
there was a cache. Nothing here has a repr that shows a secret, and nothing can be pickled.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import NoReturn

from coincurve import PrivateKey

from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.network import Network
from walletsvc.domain.serialize import compact_size

from .errors import SeedDecryptionError
from .hd import AccountKeys, p2wpkh_script_for_pubkey
from .keystore import EncryptedSeed, decrypt_seed
from .sealing import SeedVault
from .sighash import p2wpkh_script_code

# Keys kept per epoch before that epoch's key table is emptied and refilled on demand: a
# bound on memory (about 1 kB per key) that a hot wallet's spendable coins never approach.
MAX_KEYS_PER_EPOCH = 100_000


class SigningKey:
    """One derived key, ready to sign a P2WPKH input. Its repr shows only the public key."""

    __slots__ = ("private_key", "public_key", "script_code", "script_pubkey")

    def __init__(self, private_key: PrivateKey, public_key: bytes) -> None:
        self.private_key = private_key
        self.public_key = public_key  # compressed
        self.script_pubkey = p2wpkh_script_for_pubkey(public_key)
        # BIP143 scriptCode with its CompactSize length, as the sighash preimage holds it.
        code = p2wpkh_script_code(self.script_pubkey[2:])
        self.script_code = compact_size(len(code)) + code

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key.hex()})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SigningKey cannot be pickled or copied")


class EpochKeys:
    """One unlocked key epoch: its private account node and the keys derived from it."""

    __slots__ = ("_account", "_keys")

    def __init__(self, account: AccountKeys) -> None:
        self._account = account
        self._keys: dict[tuple[int, int], SigningKey] = {}

    def __repr__(self) -> str:
        return f"EpochKeys({self._account!r}, {len(self._keys)} keys)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("EpochKeys cannot be pickled or copied")

    def key(self, chain: int, index: int) -> SigningKey:
        """The key at chain/index, derived on first use. Callers have checked the path."""
        cached = self._keys.get((chain, index))
        if cached is None:
            derived = self._account.key(chain, index)
            cached = SigningKey(derived.private_key, derived.public_key)
            if len(self._keys) >= MAX_KEYS_PER_EPOCH:
                self._keys.clear()
            self._keys[(chain, index)] = cached
        return cached

    def wipe(self) -> None:
        self._account.wipe()
        self._keys.clear()


_EpochId = tuple[str, Network, int, bytes]


class KeyCache:
    """The unlocked epochs of one signer (one KEK), shared by its signing calls."""

    __slots__ = ("_epochs", "_lock", "_vault")

    def __init__(self, vault: SeedVault) -> None:
        self._vault = vault
        self._epochs: dict[_EpochId, EpochKeys] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyCache({len(self._epochs)} unlocked epochs)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyCache cannot be pickled or copied")

    def epochs(
        self,
        wallet: str,
        network: Network,
        seeds: Mapping[int, EncryptedSeed],
        needed: set[int],
    ) -> dict[int, EpochKeys]:
        """The unlocked epochs ``needed`` of ``wallet``, decrypting the seeds not yet unlocked.

        Raises SigningRefused when a seed does not decrypt for that wallet, epoch and network.
        """
        found: dict[int, EpochKeys] = {}
        for epoch in sorted(needed):
            seed = seeds[epoch]
            epoch_id = (wallet, network, epoch, seed.to_bytes())
            unlocked = self._epochs.get(epoch_id)
            if unlocked is None:
                with self._lock:
                    unlocked = self._epochs.get(epoch_id)
                    if unlocked is None:
                        unlocked = EpochKeys(self._unlock(wallet, network, epoch, seed))
                        self._epochs[epoch_id] = unlocked
            found[epoch] = unlocked
        return found

    def _unlock(
        self, wallet: str, network: Network, epoch: int, seed: EncryptedSeed
    ) -> AccountKeys:
        try:
            secret = decrypt_seed(self._vault, seed, wallet=wallet, epoch=epoch, network=network)
        except SeedDecryptionError as exc:
            raise SigningRefused(f"cannot use the seed of key epoch {epoch}: {exc}") from exc
        with secret:  # the account node is all we need; the seed is wiped right away
            return AccountKeys(secret.seed, network)

    def wipe(self) -> None:
        """Forget every unlocked epoch and key (Python ints cannot be overwritten in place;
        dropping the last reference is what can be done)."""
        with self._lock:
            for unlocked in self._epochs.values():
                unlocked.wipe()
            self._epochs.clear()

    @property
    def unlocked_epochs(self) -> int:
        return len(self._epochs)
