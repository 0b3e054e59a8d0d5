"""Treasury: cold destinations and their governed changes, sweeps, watched transactions and
alerts about the hot balance."""

from __future__ import annotations

from sqlalchemy import select

from walletsvc.db.models import ChainTransaction, Wallet
from walletsvc.db.models_treasury import (
    ColdDestinationChange,
    ColdDestinationRow,
    HotAlert,
    Sweep,
    TransactionWatch,
)
from walletsvc.db.repositories.base import Repository

ACTIVE = "active"


class ColdDestinationRepository(Repository[ColdDestinationRow]):
    model = ColdDestinationRow

    def active_of_wallet(self, wallet_id: str) -> ColdDestinationRow | None:
        return self.session.scalar(
            select(ColdDestinationRow).where(
                ColdDestinationRow.wallet_id == wallet_id, ColdDestinationRow.status == ACTIVE
            )
        )


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
