"""Response bodies of wallets and deposit addresses."""

from __future__ import annotations

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel, Timestamp
from walletsvc.api.schemas.incident import FreezeView
from walletsvc.api.schemas.treasury import ColdDestinationSummary
from walletsvc.policy.document import HotThresholds


class Balances(ResponseModel):
    """Satoshis. Described in docs/api.md (Wallets and deposit addresses)."""

    confirmed_sat: int = Field(description="Spendable: confirmed, mature, not reserved.")
    immature_sat: int = Field(description="Coinbase outputs younger than 100 blocks.")
    unconfirmed_sat: int
    in_flight_sat: int = Field(description="Spent by our transactions awaiting confirmation.")
    reserved_sat: int = Field(description="Needed by payouts pending approval or approved.")
    total_sat: int


class WalletView(ResponseModel):
    name: str
    network: str
    current_epoch: int
    account_xpub: str = Field(description="The current key epoch's account xpub.")
    balances: Balances
    created_at: Timestamp
    freezes: list[FreezeView] = Field(description="The active freezes covering this wallet.")
    cold_destination: ColdDestinationSummary | None
    hot_thresholds: HotThresholds | None


class WalletList(ResponseModel):
    wallets: list[WalletView]


class DepositAddress(ResponseModel):
    address: str
    wallet: str
    epoch: int = Field(description="The key epoch the address belongs to.")
    index: int
    label: str | None
    issued_at: Timestamp | None
    retired: bool = Field(description="True once a key rotation retired its epoch.")


class DepositAddressList(ResponseModel):
    addresses: list[DepositAddress]
