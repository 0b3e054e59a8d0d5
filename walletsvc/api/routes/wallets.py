"""Wallets and deposit addresses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import RuntimeDep, SessionDep, require_scope
from walletsvc.api.schemas import DepositAddressCreate
from walletsvc.db.models import Address, Wallet
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.incident.freeze import active_freezes, freeze_view, require_deposits_open
from walletsvc.treasury.cold import treasury_view
from walletsvc.wallets.balances import wallet_balances
from walletsvc.wallets.service import (
    current_address,
    current_epoch,
    get_wallet,
    issue_address,
    list_addresses,
)

router = APIRouter(tags=["wallets"])
ReadPrincipal = Annotated[TokenPrincipal, Depends(require_scope("read"))]
AddressReader = Annotated[TokenPrincipal, Depends(require_scope("addresses:read"))]
AddressWriter = Annotated[TokenPrincipal, Depends(require_scope("addresses:write"))]


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


def wallet_view(runtime: RuntimeDep, session: SessionDep, wallet: Wallet) -> dict[str, Any]:
    epoch = current_epoch(session, wallet)
    return {
        "name": wallet.name,
        "network": wallet.network,
        "current_epoch": wallet.current_epoch,
        "account_xpub": epoch.account_xpub,
        "balances": wallet_balances(
            session, wallet, min_confirmations=runtime.settings.min_confirmations
        ).as_dict(),
        "created_at": wallet.created_at.isoformat(),
        "freezes": [freeze_view(session, f) for f in active_freezes(session, wallet.id)],
        **treasury_view(session, runtime.tags, wallet),
    }


@router.get("/wallets")
def list_wallets(
    runtime: RuntimeDep, session: SessionDep, _: ReadPrincipal
) -> dict[str, list[dict[str, Any]]]:
    from sqlalchemy import select

    wallets = session.scalars(select(Wallet).order_by(Wallet.name))
    return {"wallets": [wallet_view(runtime, session, w) for w in wallets]}


@router.get("/wallets/{wallet}")
def show_wallet(
    wallet: str, runtime: RuntimeDep, session: SessionDep, _: ReadPrincipal
) -> dict[str, Any]:
    return wallet_view(runtime, session, get_wallet(session, wallet))


@router.post("/wallets/{wallet}/deposit-addresses", status_code=201)
def new_deposit_address(
    wallet: str,
    body: DepositAddressCreate,
    runtime: RuntimeDep,
    principal: AddressWriter,
) -> dict[str, Any]:
    with runtime.db.write() as uow:
        row = get_wallet(uow.session, wallet)
        require_deposits_open(uow.session, row)
        address = issue_address(uow, row, label=body.label, actor=principal.actor)
        return address_view(address, row)


@router.get("/wallets/{wallet}/deposit-addresses/current")
def current_deposit_address(wallet: str, session: SessionDep, _: AddressReader) -> dict[str, Any]:
    row = get_wallet(session, wallet)
    require_deposits_open(session, row)
    return address_view(current_address(session, row), row)


@router.get("/wallets/{wallet}/deposit-addresses")
def deposit_addresses(
    wallet: str,
    session: SessionDep,
    _: AddressReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    row = get_wallet(session, wallet)
    return {
        "addresses": [
            address_view(a, row) for a in list_addresses(session, row, limit=limit, offset=offset)
        ]
    }
