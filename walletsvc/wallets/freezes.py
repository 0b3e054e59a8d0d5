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
    """Active freezes that apply to ``wallet_id`` (global ones always apply)."""
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


def require_current_address_servable(uow: ReadUnitOfWork, wallet: Wallet) -> None:
    """``deposit-addresses/current`` under a deposits (or ``all``) freeze.

    Refused while the current address belongs to a key that existed when a freeze was
    applied: that key may be in a thief's hands, so nobody should be told to pay it. Once a
    key rotation after every such freeze has made a new epoch current, its address is served:
    after a compromise the pool must switch its coinbase to exactly that address, while the
    freeze still holds payouts and new address issuance (docs/runbook.md).
    """
    holding = [f for f in active_freezes(uow, wallet.id) if f.scope in ("all", "deposits")]
    if not holding:
        return
    epoch = uow.key_epochs.find(wallet.id, wallet.current_epoch)
    if epoch is not None and all(epoch.created_at > f.created_at for f in holding):
        return
    raise Frozen(
        f"deposits are frozen ({holding[0].reason}); do not use old deposit addresses. "
        "After a key rotation the new epoch's address is served here.",
        field="wallet",
    )


def require_withdrawals_open(uow: ReadUnitOfWork, wallet: Wallet) -> None:
    active = withdrawals_freeze(uow, wallet.id)
    if active is not None:
        raise Frozen(f"withdrawals are frozen ({active.reason})", field="wallet")
