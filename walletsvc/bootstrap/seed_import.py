"""Moving key epochs' seeds from the database into the signer (migration 0020).

Before revision 0015 the service made each wallet's seed and sealed it under its KEK in
``key_epochs.encrypted_seed``; the signer cannot open that ciphertext. The migration hands each
such epoch to :class:`SeedImporter`, which opens it with the KEK one last time and gives the
signer its recovery words (``import_seed``: only while the signer's genesis is open, like the
staff import of 0016, and only if the words derive the account xpub the service holds). The
migration then clears the column: no seed stays in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from walletsvc.config import Settings
from walletsvc.domain.errors import DomainError, Forbidden
from walletsvc.keys.errors import SeedDecryptionError
from walletsvc.keys.kek import load_kek
from walletsvc.keys.keystore import EncryptedSeed, recovery_words
from walletsvc.keys.sealing import SeedVault
from walletsvc.signer.client import SignerClient


class SeedImporter:
    """Called by migration 0020 once per key epoch holding a ciphertext; loads the KEK and
    reaches the signer only then (a database without legacy seeds never needs either);
    ``start_signer`` is called first then (`walletsvc migrate` starts the dev signer)."""

    def __init__(self, settings: Settings, start_signer: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._start_signer = start_signer
        self._vault: SeedVault | None = None
        self._signer: SignerClient | None = None

    def __repr__(self) -> str:
        return f"SeedImporter({self._settings.signer_socket})"

    def __call__(self, epoch: dict[str, Any]) -> None:
        if self._vault is None or self._signer is None:
            if self._start_signer is not None:
                self._start_signer()
            self._vault = load_kek(self._settings.kek_path).seed_vault()
            self._signer = SignerClient(self._settings)
        wallet, number = str(epoch["wallet"]), int(epoch["epoch"])
        named = f"wallet {wallet!r} key epoch {number}"
        try:
            words = recovery_words(
                self._vault,
                EncryptedSeed.from_string(str(epoch["sealed"])),
                wallet=wallet,
                epoch=number,
                network=self._settings.network,
            )
        except SeedDecryptionError as exc:
            raise RuntimeError(
                f"the seed of {named} does not open under this KEK ({exc}): it cannot move "
                "into the signer"
            ) from None
        phrase = " ".join(words.reveal())
        try:
            self._signer.import_seed(
                wallet=wallet,
                epoch=number,
                words=phrase,
                account_xpub=str(epoch["account_xpub"]),
            )
        except Forbidden:
            raise RuntimeError(
                f"the seed of {named} is still a KEK ciphertext in the database and the "
                "signer's genesis is closed: import it on the signer's host with `walletsvc "
                'signer import-seed` (docs/runbook.md, "Upgrading a database from before the '
                'signer"), then migrate again'
            ) from None
        except DomainError as exc:
            raise RuntimeError(f"the seed of {named} cannot move into the signer: {exc}") from None
        finally:
            del phrase

    def close(self) -> None:
        if self._signer is not None:
            self._signer.close()
