"""Wallets and deposit addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import MAX_SEQUENCE, DepositAddressCreate
from walletsvc.api.schemas.wallets import (
    DepositAddress,
    DepositAddressList,
    WalletList,
    WalletView,
)
from walletsvc.bootstrap import wallet_views
from walletsvc.governance.tokens import TokenPrincipal

router = APIRouter(tags=["wallets"], responses=error_responses(401, 403))
ReadPrincipal = Annotated[TokenPrincipal, Depends(require_scope("read"))]
AddressReader = Annotated[TokenPrincipal, Depends(require_scope("addresses:read"))]
AddressWriter = Annotated[TokenPrincipal, Depends(require_scope("addresses:write"))]


@router.get("/wallets")
def list_wallets(runtime: RuntimeDep, _: ReadPrincipal) -> WalletList:
    return WalletList.model_validate(
        wallet_views.list_wallet_views(
            runtime.db, runtime.tags, min_confirmations=runtime.settings.min_confirmations
        )
    )


@router.get("/wallets/{wallet}", responses=error_responses(404, 422))
def show_wallet(wallet: str, runtime: RuntimeDep, _: ReadPrincipal) -> WalletView:
    return WalletView.model_validate(
        wallet_views.wallet_view(
            runtime.db, runtime.tags, wallet, min_confirmations=runtime.settings.min_confirmations
        )
    )


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
    return DepositAddress.model_validate(
        wallet_views.new_deposit_address(
            runtime.db, wallet, label=body.label, actor=principal.actor
        )
    )


@router.get("/wallets/{wallet}/deposit-addresses/current", responses=error_responses(404, 422, 423))
def current_deposit_address(wallet: str, runtime: RuntimeDep, _: AddressReader) -> DepositAddress:
    return DepositAddress.model_validate(wallet_views.current_deposit_address(runtime.db, wallet))


@router.get("/wallets/{wallet}/deposit-addresses", responses=error_responses(404, 422))
def deposit_addresses(
    wallet: str,
    runtime: RuntimeDep,
    _: AddressReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
) -> DepositAddressList:
    return DepositAddressList.model_validate(
        wallet_views.deposit_addresses(runtime.db, wallet, limit=limit, offset=offset)
    )
