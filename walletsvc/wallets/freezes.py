"""Whether a wallet is frozen: the read side of the emergency freeze.

Every feature that signs, broadcasts or issues addresses asks here before acting, so this sits
in the lowest feature layer; applying and lifting freezes (walletsvc.incident.freeze) sits
at the top, with the incident response that uses it.
"""

from __future__ import annotations

from walletsvc.db.models import Wallet
from walletsvc.db.models_incident import Freeze
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Frozen


def active_freezes(uow: ReadUnitOfWork, wallet_id: str | None = None) -> list[Freeze]:
    """Active freezes that apply to ``wallet_id`` (global ones always apply).

    In a write transaction this first takes the freeze gate (shared) until commit: a freeze
    being applied is waited for, and one applied later waits for this transaction.
    """
    uow.hold_freeze_gate()
    return uow.freezes.active(wallet_id)


def withdrawals_freeze(uow: ReadUnitOfWork, wallet_id: str) -> Freeze | None:
    return next(
        (f for f in active_freezes(uow, wallet_id) if f.scope in ("all", "withdrawals")),
        None,
    )


def deposits_freeze(uow: ReadUnitOfWork, wallet_id: str) -> Freeze | None:
    return next((f for f in active_freezes(uow, wallet_id) if f.scope in ("all", "deposits")), None)


def require_deposits_open(uow: ReadUnitOfWork, wallet: Wallet) -> None:
    active = deposits_freeze(uow, wallet.id)
    if active is not None:
        raise Frozen(
            f"deposits are frozen ({active.reason}); do not use old deposit addresses",
            field="wallet",
        )


def require_withdrawals_open(uow: ReadUnitOfWork, wallet: Wallet) -> None:
    active = withdrawals_freeze(uow, wallet.id)
    if active is not None:
        raise Frozen(f"withdrawals are frozen ({active.reason})", field="wallet")
