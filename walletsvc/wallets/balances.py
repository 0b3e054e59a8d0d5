"""Wallet balances, from our own records (no chain call): what the scanner has seen."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from walletsvc.db.models import ChainTransaction, Utxo, Wallet, Withdrawal
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.payouts.signing import tip_height

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


def wallet_balances(s: Session, wallet: Wallet, *, min_confirmations: int) -> Balances:
    tip = tip_height(s)
    confirmed = immature = unconfirmed = in_flight = 0
    for amount, height, coinbase, reserved in s.execute(
        select(Utxo.amount_sat, Utxo.block_height, Utxo.is_coinbase, Utxo.reserved_by).where(
            Utxo.wallet_id == wallet.id, Utxo.spent_by_txid.is_(None)
        )
    ):
        depth = 0 if height is None else tip - height + 1
        if reserved is not None:
            in_flight += amount
        elif height is None or depth < min_confirmations:
            unconfirmed += amount
        elif coinbase and depth < COINBASE_MATURITY:
            immature += amount
        else:
            confirmed += amount
    reserved_sum = s.scalar(
        select(func.coalesce(func.sum(Withdrawal.amount_sat), 0)).where(
            Withdrawal.wallet_id == wallet.id,
            Withdrawal.status.in_(
                [WithdrawalStatus.PENDING_APPROVAL.value, WithdrawalStatus.APPROVED.value]
            ),
        )
    )
    return Balances(
        confirmed_sat=confirmed,
        immature_sat=immature,
        unconfirmed_sat=unconfirmed,
        in_flight_sat=in_flight,
        reserved_sat=int(reserved_sum or 0),
        total_sat=confirmed + immature + unconfirmed + in_flight,
    )


def pending_transactions(s: Session, wallet: Wallet) -> int:
    return int(
        s.scalar(
            select(func.count(ChainTransaction.id)).where(
                ChainTransaction.wallet_id == wallet.id,
                ChainTransaction.status.in_(["signed", "broadcast"]),
            )
        )
        or 0
    )
