"""Wallets and deposit addresses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from walletsvc.api.deps import RuntimeDep, require_scope
from walletsvc.api.schemas import DepositAddressCreate
from walletsvc.bootstrap import wallet_views
from walletsvc.governance.tokens import TokenPrincipal

router = APIRouter(tags=["wallets"])
ReadPrincipal = Annotated[TokenPrincipal, Depends(require_scope("read"))]
AddressReader = Annotated[TokenPrincipal, Depends(require_scope("addresses:read"))]
AddressWriter = Annotated[TokenPrincipal, Depends(require_scope("addresses:write"))]


@router.get("/wallets")
def list_wallets(runtime: RuntimeDep, _: ReadPrincipal) -> dict[str, list[dict[str, Any]]]:
    return wallet_views.list_wallet_views(
        runtime.db, runtime.kek, min_confirmations=runtime.settings.min_confirmations
    )


@router.get("/wallets/{wallet}")
def show_wallet(wallet: str, runtime: RuntimeDep, _: ReadPrincipal) -> dict[str, Any]:
    return wallet_views.wallet_view(
        runtime.db, runtime.kek, wallet, min_confirmations=runtime.settings.min_confirmations
    )


@router.post("/wallets/{wallet}/deposit-addresses", status_code=201)
def new_deposit_address(
    wallet: str,
    body: DepositAddressCreate,
    runtime: RuntimeDep,
    principal: AddressWriter,
) -> dict[str, Any]:
    return wallet_views.new_deposit_address(
        runtime.db, wallet, label=body.label, actor=principal.actor
    )


@router.get("/wallets/{wallet}/deposit-addresses/current")
def current_deposit_address(wallet: str, runtime: RuntimeDep, _: AddressReader) -> dict[str, Any]:
    return wallet_views.current_deposit_address(runtime.db, wallet)


@router.get("/wallets/{wallet}/deposit-addresses")
def deposit_addresses(
    wallet: str,
    runtime: RuntimeDep,
    _: AddressReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return wallet_views.deposit_addresses(runtime.db, wallet, limit=limit, offset=offset)
