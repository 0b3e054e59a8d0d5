"""Treasury: cold destinations and their governed changes, sweeps, watched transactions,
alerts about the hot balance, refills from cold and the cold coins they spend."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update

from walletsvc.db.models import ChainTransaction, Wallet
from walletsvc.db.models_treasury import (
    ColdDestinationChange,
    ColdDestinationRow,
    ColdUtxo,
    HotAlert,
    Refill,
    Sweep,
    TransactionWatch,
)
from walletsvc.db.repositories.base import Repository, in_chunks

ACTIVE = "active"


class ColdDestinationRepository(Repository[ColdDestinationRow]):
    model = ColdDestinationRow

    def active_of_wallet(self, wallet_id: str) -> ColdDestinationRow | None:
        return self.session.scalar(
            select(ColdDestinationRow).where(
                ColdDestinationRow.wallet_id == wallet_id, ColdDestinationRow.status == ACTIVE
            )
        )

    def of_wallet(self, wallet_id: str) -> list[ColdDestinationRow]:
        """Every destination the wallet has had (retired ones may still hold coins)."""
        return list(
            self.session.scalars(
                select(ColdDestinationRow)
                .where(ColdDestinationRow.wallet_id == wallet_id)
                .order_by(ColdDestinationRow.created_at, ColdDestinationRow.id)
            )
        )

    def all(self) -> list[ColdDestinationRow]:
        return list(self.session.scalars(select(ColdDestinationRow)))


class ColdDestinationChangeRepository(Repository[ColdDestinationChange]):
    model = ColdDestinationChange

    def newest_of_wallet(self, wallet_id: str, *, limit: int) -> list[ColdDestinationChange]:
        return list(
            self.session.scalars(
                select(ColdDestinationChange)
                .where(ColdDestinationChange.wallet_id == wallet_id)
                .order_by(ColdDestinationChange.created_at.desc())
                .limit(limit)
            )
        )


class SweepRepository(Repository[Sweep]):
    model = Sweep

    def newest_with_transactions(
        self, *, wallet_name: str | None, limit: int
    ) -> list[tuple[Sweep, ChainTransaction, str]]:
        """(sweep, its transaction, the wallet's name), newest first."""
        query = (
            select(Sweep, ChainTransaction, Wallet.name)
            .join(ChainTransaction, ChainTransaction.id == Sweep.transaction_id)
            .join(Wallet, Wallet.id == Sweep.wallet_id)
        )
        if wallet_name is not None:
            query = query.where(Wallet.name == wallet_name)
        rows = self.session.execute(
            query.order_by(Sweep.created_at.desc(), Sweep.id).limit(limit)
        ).all()
        return [(sweep, tx, name) for sweep, tx, name in rows]

    def of_wallet_by_trigger(
        self, wallet_id: str, trigger: str
    ) -> list[tuple[Sweep, ChainTransaction]]:
        rows = self.session.execute(
            select(Sweep, ChainTransaction)
            .join(ChainTransaction, ChainTransaction.id == Sweep.transaction_id)
            .where(Sweep.wallet_id == wallet_id, Sweep.trigger == trigger)
            .order_by(Sweep.created_at)
        ).all()
        return [(sweep, tx) for sweep, tx in rows]

    def by_txid(self, txid: str) -> Sweep | None:
        """The sweep that the transaction ``txid`` carries."""
        return self.session.scalar(
            select(Sweep)
            .join(ChainTransaction, ChainTransaction.id == Sweep.transaction_id)
            .where(ChainTransaction.txid == txid)
        )

    def signed_transaction_ids(self, *, trigger: str) -> list[str]:
        """Ids of signed, unbroadcast sweep transactions made for ``trigger``, oldest first."""
        return list(
            self.session.scalars(
                select(ChainTransaction.id)
                .join(Sweep, Sweep.transaction_id == ChainTransaction.id)
                .where(ChainTransaction.status == "signed", Sweep.trigger == trigger)
                .order_by(ChainTransaction.created_at)
            )
        )


class TransactionWatchRepository(Repository[TransactionWatch]):
    model = TransactionWatch


class HotAlertRepository(Repository[HotAlert]):
    model = HotAlert

    def open_of_wallet(self, wallet_id: str, *, kind: str) -> HotAlert | None:
        return self.session.scalar(
            select(HotAlert).where(
                HotAlert.wallet_id == wallet_id, HotAlert.kind == kind, HotAlert.status == "open"
            )
        )


class RefillRepository(Repository[Refill]):
    model = Refill

    def by_txids(self, txids: Sequence[str]) -> list[Refill]:
        found: list[Refill] = []
        for chunk in in_chunks(txids):
            found.extend(self.session.scalars(select(Refill).where(Refill.txid.in_(chunk))))
        return found

    def recent(self, limit: int) -> list[Refill]:
        return list(
            self.session.scalars(
                select(Refill).order_by(Refill.created_at.desc(), Refill.id).limit(limit)
            )
        )

    def open_of_wallet(self, wallet_id: str) -> list[Refill]:
        return list(
            self.session.scalars(
                select(Refill)
                .where(Refill.wallet_id == wallet_id, Refill.status == "awaiting_signatures")
                .order_by(Refill.created_at)
            )
        )


class ColdUtxoRepository(Repository[ColdUtxo]):
    model = ColdUtxo

    def by_outpoint(self, txid: str, vout: int) -> ColdUtxo | None:
        return self.session.scalar(
            select(ColdUtxo).where(ColdUtxo.txid == txid, ColdUtxo.vout == vout)
        )

    def unspent_of_txids(self, txids: Sequence[str]) -> list[ColdUtxo]:
        """Unspent cold coins created by any of ``txids``."""
        found: list[ColdUtxo] = []
        for chunk in in_chunks(txids):
            found.extend(
                self.session.scalars(
                    select(ColdUtxo).where(
                        ColdUtxo.txid.in_(chunk), ColdUtxo.spent_by_txid.is_(None)
                    )
                )
            )
        return found

    def unspent_of_wallet(self, wallet_id: str, *, for_update: bool = False) -> list[ColdUtxo]:
        """Confirmed, unspent cold coins, oldest first (reserved ones included)."""
        query = (
            select(ColdUtxo)
            .where(
                ColdUtxo.wallet_id == wallet_id,
                ColdUtxo.spent_by_txid.is_(None),
                ColdUtxo.block_height.is_not(None),
            )
            .order_by(ColdUtxo.block_height, ColdUtxo.txid, ColdUtxo.vout)
        )
        if for_update:
            query = query.with_for_update()
        return list(self.session.scalars(query))

    def balance_of_wallet(self, wallet_id: str) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(ColdUtxo.amount_sat), 0)).where(
                ColdUtxo.wallet_id == wallet_id,
                ColdUtxo.spent_by_txid.is_(None),
                ColdUtxo.block_height.is_not(None),
            )
        )
        return int(total or 0)

    def reserved_by_refill(self, refill_id: str) -> list[ColdUtxo]:
        return list(
            self.session.scalars(
                select(ColdUtxo)
                .where(ColdUtxo.reserved_by == refill_id)
                .order_by(ColdUtxo.txid, ColdUtxo.vout)
            )
        )

    # A reorganisation: what the scanner undoes above the fork (as for the hot coins).
    def delete_coinbase_above(self, height: int) -> None:
        self.session.execute(
            delete(ColdUtxo).where(ColdUtxo.block_height > height, ColdUtxo.is_coinbase)
        )

    def unconfirm_above(self, height: int) -> None:
        self.session.execute(
            update(ColdUtxo)
            .where(ColdUtxo.block_height > height)
            .values(block_height=None, block_hash=None)
        )

    def unspend_above(self, height: int) -> None:
        self.session.execute(
            update(ColdUtxo)
            .where(ColdUtxo.spent_height > height)
            .values(spent_by_txid=None, spent_height=None)
        )


# Parameters per IN (...) list: far below every backend's limit.
