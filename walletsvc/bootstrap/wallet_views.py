"""Wallets and deposit addresses as the API shows them.

These use cases combine several features (balances, freezes, the treasury's cold
destination), so they live above all of them, next to the composition root.
"""

from __future__ import annotations

from typing import Any

from walletsvc.db.database import Database
from walletsvc.db.models import Address, Wallet
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.incident.freeze import freeze_view
from walletsvc.keys.integrity import RowTagger
from walletsvc.treasury.cold import treasury_view
from walletsvc.wallets.balances import wallet_balances
from walletsvc.wallets.freezes import (
    active_freezes,
    require_current_address_servable,
    require_deposits_open,
)
from walletsvc.wallets.service import (
    current_address,
    current_epoch,
    get_wallet,
    issue_address,
    list_addresses,
)


def address_view(address: Address, wallet: Wallet) -> dict[str, Any]:
    return {
        "address": address.address,
        "wallet": wallet.name,
        "epoch": address.epoch,
        "index": address.index,
        "label": address.label,
        "issued_at": address.issued_at.isoformat() if address.issued_at else None,
        "retired": address.retired_at is not None,
    }


def _wallet_view(
    uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet, *, min_confirmations: int
) -> dict[str, Any]:
    epoch = current_epoch(uow, wallet)
    return {
        "name": wallet.name,
        "network": wallet.network,
        "current_epoch": wallet.current_epoch,
        "account_xpub": epoch.account_xpub,
        "balances": wallet_balances(uow, wallet, min_confirmations=min_confirmations).as_dict(),
        "created_at": wallet.created_at.isoformat(),
        "freezes": [freeze_view(uow, f) for f in active_freezes(uow, wallet.id)],
        **treasury_view(uow, tags, wallet),
    }


def wallet_view(
    db: Database, tags: RowTagger, name: str, *, min_confirmations: int
) -> dict[str, Any]:
    with db.read() as uow:
        wallet = get_wallet(uow, name)
        return _wallet_view(uow, tags, wallet, min_confirmations=min_confirmations)


def list_wallet_views(db: Database, tags: RowTagger, *, min_confirmations: int) -> dict[str, Any]:
    with db.read() as uow:
        return {
            "wallets": [
                _wallet_view(uow, tags, w, min_confirmations=min_confirmations)
                for w in uow.wallets.all_by_name()
            ]
        }


def new_deposit_address(
    db: Database, wallet: str, *, label: str | None, actor: str
) -> dict[str, Any]:
    """Issue the wallet's next deposit address, unless deposits are frozen."""
    with db.write() as uow:
        row = get_wallet(uow, wallet)
        require_deposits_open(uow, row)
        address = issue_address(uow, row, label=label, actor=actor)
        return address_view(address, row)


def current_deposit_address(db: Database, wallet: str) -> dict[str, Any]:
    with db.read() as uow:
        row = get_wallet(uow, wallet)
        require_current_address_servable(uow, row)
        return address_view(current_address(uow, row), row)


def deposit_addresses(db: Database, wallet: str, *, limit: int, offset: int) -> dict[str, Any]:
    with db.read() as uow:
        row = get_wallet(uow, wallet)
        addresses = list_addresses(uow, row, limit=limit, offset=offset)
        return {"addresses": [address_view(a, row) for a in addresses]}
