"""Wallets and deposit addresses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import RuntimeDep, SessionDep, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import DepositAddressCreate
from walletsvc.api.schemas.wallets import (
    DepositAddress,
    DepositAddressList,
    WalletList,
    WalletView,
)
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

router = APIRouter(tags=["wallets"], responses=error_responses(401, 403))
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
def list_wallets(runtime: RuntimeDep, session: SessionDep, _: ReadPrincipal) -> WalletList:
    from sqlalchemy import select

    wallets = session.scalars(select(Wallet).order_by(Wallet.name))
    return WalletList.model_validate(
        {"wallets": [wallet_view(runtime, session, w) for w in wallets]}
    )


@router.get("/wallets/{wallet}", responses=error_responses(404, 422))
def show_wallet(
    wallet: str, runtime: RuntimeDep, session: SessionDep, _: ReadPrincipal
) -> WalletView:
    return WalletView.model_validate(wallet_view(runtime, session, get_wallet(session, wallet)))


@router.post(
    "/wallets/{wallet}/deposit-addresses",
    status_code=201,
    responses=error_responses(404, 422, 423),
)
def new_deposit_address(
    wallet: str,
    body: DepositAddressCreate,
    runtime: RuntimeDep,
    principal: AddressWriter,
) -> DepositAddress:
    with runtime.db.write() as uow:
        row = get_wallet(uow.session, wallet)
        require_deposits_open(uow.session, row)
        address = issue_address(uow, row, label=body.label, actor=principal.actor)
        return DepositAddress.model_validate(address_view(address, row))


@router.get("/wallets/{wallet}/deposit-addresses/current", responses=error_responses(404, 422, 423))
def current_deposit_address(wallet: str, session: SessionDep, _: AddressReader) -> DepositAddress:
    row = get_wallet(session, wallet)
    require_deposits_open(session, row)
    return DepositAddress.model_validate(address_view(current_address(session, row), row))


@router.get("/wallets/{wallet}/deposit-addresses", responses=error_responses(404, 422))
def deposit_addresses(
    wallet: str,
    session: SessionDep,
    _: AddressReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DepositAddressList:
    row = get_wallet(session, wallet)
    return DepositAddressList.model_validate(
        {
            "addresses": [
                address_view(a, row)
                for a in list_addresses(session, row, limit=limit, offset=offset)
            ]
        }
    )
