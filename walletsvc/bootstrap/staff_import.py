"""Moving staff TOTP secrets from the database into the signer (migration 0016).

Before that revision each member's secret was sealed under the service's KEK in the staff
row. The migration hands each such member to :class:`TotpImporter`, which unseals the secret
with the KEK one last time and enrols the member in the signer with it (allowed only while
the signer's genesis is open: an upgrade is part of setting the signer up), a disabled member
disabled there too. The migration then drops the column: no secret stays in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from walletsvc.config import Settings
from walletsvc.keys.errors import SealedSecretError
from walletsvc.keys.kek import load_kek
from walletsvc.keys.sealing import TotpSealer
from walletsvc.signer.client import SignerClient


class TotpImporter:
    """Called by migration 0016 once per member holding a secret; loads the KEK and reaches
    the signer only then (a fresh database never needs either); ``start_signer`` is called
    first then (`walletsvc migrate` starts the dev signer)."""

    def __init__(self, settings: Settings, start_signer: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._start_signer = start_signer
        self._sealer: TotpSealer | None = None
        self._signer: SignerClient | None = None

    def __repr__(self) -> str:
        return f"TotpImporter({self._settings.signer_socket})"

    def __call__(self, member: dict[str, Any]) -> None:
        if self._sealer is None or self._signer is None:
            if self._start_signer is not None:
                self._start_signer()
            self._sealer = load_kek(self._settings.kek_path).totp_sealer()
            self._signer = SignerClient(self._settings)
        staff_id = str(member["staff_id"])
        try:
            secret = self._sealer.unseal(staff_id, str(member["sealed"]))
        except SealedSecretError:
            raise RuntimeError(
                f"the TOTP secret of staff member {member['username']!r} does not open under "
                "this KEK: it cannot move into the signer"
            ) from None
        self._signer.enrol_staff(
            staff_id=staff_id,
            username=str(member["username"]),
            role=str(member["role"]),
            groups=[str(g) for g in member["groups"]],
            totp_secret=secret,
        )
        if member["disabled"]:
            self._signer.disable_staff(staff_id)

    def close(self) -> None:
        if self._signer is not None:
            self._signer.close()
