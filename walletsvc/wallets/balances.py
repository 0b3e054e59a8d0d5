"""Wallet balances, from our own records (no chain call): what the scanner has seen."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from walletsvc.db.models import Wallet
from walletsvc.db.repositories import ReadUnitOfWork

COINBASE_MATURITY = 100


@dataclass(frozen=True)
class Balances:
    confirmed_sat: int  # spendable now: confirmed, mature, not reserved by a signed tx
    immature_sat: int  # coinbase outputs younger than 100 blocks
    unconfirmed_sat: int  # ours but not yet in a block
    in_flight_sat: int  # coins spent by our signed/broadcast transactions, not yet confirmed
    reserved_sat: int  # needed by payouts that are pending approval or approved
    total_sat: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def wallet_balances(uow: ReadUnitOfWork, wallet: Wallet, *, min_confirmations: int) -> Balances:
    tip = uow.scanned_blocks.tip_height()
    confirmed = immature = unconfirmed = in_flight = 0
    for amount, height, coinbase, reserved in uow.utxos.unspent_amounts(wallet.id):
        depth = 0 if height is None else tip - height + 1
        if reserved is not None:
            in_flight += amount
        elif height is None or depth < min_confirmations:
            unconfirmed += amount
        elif coinbase and depth < COINBASE_MATURITY:
            immature += amount
        else:
            confirmed += amount
    reserved_sum = uow.withdrawals.awaiting_total(wallet.id)
    return Balances(
        confirmed_sat=confirmed,
        immature_sat=immature,
        unconfirmed_sat=unconfirmed,
        in_flight_sat=in_flight,
        reserved_sat=reserved_sum,
        total_sat=confirmed + immature + unconfirmed + in_flight,
    )


def pending_transactions(uow: ReadUnitOfWork, wallet: Wallet) -> int:
    return uow.transactions.count_in_flight(wallet.id)
