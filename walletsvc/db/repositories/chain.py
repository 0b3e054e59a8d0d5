"""What the wallet knows of the chain: its UTXOs, the blocks scanned, its transactions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update

from walletsvc.db.models import Address, ChainTransaction, ScannedBlock, Utxo
from walletsvc.db.models_treasury import TransactionWatch
from walletsvc.db.repositories.base import Repository, in_chunks


class UtxoRepository(Repository[Utxo]):
    model = Utxo

    def unspent_amounts(self, wallet_id: str) -> list[tuple[int, int | None, bool, str | None]]:
        """(amount, block height, coinbase?, reserving transaction) of each unspent coin."""
        rows = self.session.execute(
            select(Utxo.amount_sat, Utxo.block_height, Utxo.is_coinbase, Utxo.reserved_by).where(
                Utxo.wallet_id == wallet_id, Utxo.spent_by_txid.is_(None)
            )
        ).all()
        return [(a, h, c, r) for a, h, c, r in rows]

    def reserved_by(self, transaction_id: str) -> list[Utxo]:
        return list(self.session.scalars(select(Utxo).where(Utxo.reserved_by == transaction_id)))

    def reassign(self, txid: str, vout: int, *, reserved_by: str) -> None:
        """Make the coin reserved by another of our transactions (a sweep taking it over)."""
        self.session.execute(
            update(Utxo).where(Utxo.txid == txid, Utxo.vout == vout).values(reserved_by=reserved_by)
        )

    def by_outpoint(self, txid: str, vout: int) -> Utxo | None:
        return self.session.scalar(select(Utxo).where(Utxo.txid == txid, Utxo.vout == vout))

    def spendable_with_addresses(self, wallet_id: str, epoch: int) -> list[tuple[Utxo, Address]]:
        """Confirmed, unspent, unreserved coins of one key epoch, with their addresses."""
        return self._with_addresses(
            Utxo.wallet_id == wallet_id,
            Address.epoch == epoch,
            Utxo.spent_by_txid.is_(None),
            Utxo.reserved_by.is_(None),
            Utxo.block_height.is_not(None),
        )

    def unspent_at_with_addresses(
        self, outpoints: Sequence[tuple[str, int]]
    ) -> list[tuple[Utxo, Address]]:
        """Our coins at these outpoints not yet spent in a block, with their addresses."""
        if not outpoints:
            return []
        at = or_(*(and_(Utxo.txid == txid, Utxo.vout == vout) for txid, vout in outpoints))
        return self._with_addresses(at, Utxo.spent_by_txid.is_(None))

    def reserved_with_addresses(self, transaction_id: str) -> list[tuple[Utxo, Address]]:
        """The coins a transaction of ours spends, with their addresses."""
        return self._with_addresses(Utxo.reserved_by == transaction_id)

    def _with_addresses(self, *conditions: ColumnElement[bool]) -> list[tuple[Utxo, Address]]:
        rows = self.session.execute(
            select(Utxo, Address).join(Address, Address.id == Utxo.address_id).where(*conditions)
        ).all()
        return [(utxo, address) for utxo, address in rows]

    def retired_epochs_with_addresses(
        self, wallet_id: str, current_epoch: int, *, voided_status: str
    ) -> list[tuple[Utxo, Address]]:
        """Confirmed, unspent coins of epochs before ``current_epoch``: free ones and those
        held by the wallet's voided transactions."""
        voided_ids = select(ChainTransaction.id).where(
            ChainTransaction.wallet_id == wallet_id, ChainTransaction.status == voided_status
        )
        return self._with_addresses(
            Utxo.wallet_id == wallet_id,
            Address.epoch < current_epoch,
            Utxo.spent_by_txid.is_(None),
            Utxo.block_height.is_not(None),
            or_(Utxo.reserved_by.is_(None), Utxo.reserved_by.in_(voided_ids)),
        )

    def unspent_outpoints(self) -> list[tuple[str, int]]:
        """(txid, vout) of every coin of ours not yet spent in a block."""
        rows = self.session.execute(
            select(Utxo.txid, Utxo.vout).where(Utxo.spent_by_txid.is_(None))
        ).all()
        return [(txid, vout) for txid, vout in rows]

    def unspent_of_txids(self, txids: Sequence[str]) -> list[Utxo]:
        """Our unspent coins created by any of ``txids``."""
        found: list[Utxo] = []
        for chunk in in_chunks(txids):
            found.extend(
                self.session.scalars(
                    select(Utxo).where(Utxo.txid.in_(chunk), Utxo.spent_by_txid.is_(None))
                )
            )
        return found

    def of_txids(self, txids: Sequence[str]) -> dict[tuple[str, int], Utxo]:
        """Our coins (spent or not) created by any of ``txids``, by outpoint."""
        found: dict[tuple[str, int], Utxo] = {}
        for chunk in in_chunks(txids):
            for coin in self.session.scalars(select(Utxo).where(Utxo.txid.in_(chunk))):
                found[(coin.txid, coin.vout)] = coin
        return found

    # A reorganisation: what the scanner undoes above the fork.

    def coinbase_above(self, height: int) -> list[Utxo]:
        return list(
            self.session.scalars(select(Utxo).where(Utxo.block_height > height, Utxo.is_coinbase))
        )

    def delete_coinbase_above(self, height: int) -> None:
        self.session.execute(delete(Utxo).where(Utxo.block_height > height, Utxo.is_coinbase))

    def unconfirm_above(self, height: int) -> None:
        self.session.execute(
            update(Utxo)
            .where(Utxo.block_height > height)
            .values(block_height=None, block_hash=None)
        )

    def unspend_above(self, height: int) -> None:
        self.session.execute(
            update(Utxo)
            .where(Utxo.spent_height > height)
            .values(spent_by_txid=None, spent_height=None)
        )

    def all(self) -> list[Utxo]:
        return list(self.session.scalars(select(Utxo)))


class ScannedBlockRepository(Repository[ScannedBlock]):
    model = ScannedBlock

    def highest(self) -> int | None:
        """The highest block the scanner has recorded, None before the first scan."""
        return self.session.scalar(select(func.max(ScannedBlock.height)))

    def tip_height(self) -> int:
        """The highest block the scanner has recorded (our view of the chain tip), 0 if none."""
        return self.highest() or 0

    def newest_below(self, below: int | None, *, limit: int) -> list[tuple[int, str]]:
        """(height, hash) of up to ``limit`` scanned blocks under ``below``, highest first."""
        query = select(ScannedBlock.height, ScannedBlock.hash)
        if below is not None:
            query = query.where(ScannedBlock.height < below)
        rows = self.session.execute(query.order_by(ScannedBlock.height.desc()).limit(limit))
        return [(height, block_hash) for height, block_hash in rows]

    def delete_above(self, height: int) -> None:
        self.session.execute(delete(ScannedBlock).where(ScannedBlock.height > height))


class ChainTransactionRepository(Repository[ChainTransaction]):
    model = ChainTransaction

    def count_in_flight(self, wallet_id: str) -> int:
        """Signed or broadcast, not yet confirmed, transactions of the wallet."""
        return int(
            self.session.scalar(
                select(func.count(ChainTransaction.id)).where(
                    ChainTransaction.wallet_id == wallet_id,
                    ChainTransaction.status.in_(["signed", "broadcast"]),
                )
            )
            or 0
        )

    def ids_with_status(self, status: str) -> list[str]:
        """Ids of the transactions in ``status``, oldest first."""
        return list(
            self.session.scalars(
                select(ChainTransaction.id)
                .where(ChainTransaction.status == status)
                .order_by(ChainTransaction.created_at)
            )
        )

    def broadcast_payouts_with_signed_height(
        self,
    ) -> list[tuple[ChainTransaction, int | None]]:
        """Broadcast, unconfirmed payout transactions (oldest first) and the tip height when
        each was signed, if it is watched."""
        rows = self.session.execute(
            select(ChainTransaction, TransactionWatch.signed_height)
            .outerjoin(TransactionWatch, TransactionWatch.transaction_id == ChainTransaction.id)
            .where(ChainTransaction.status == "broadcast", ChainTransaction.kind == "payout")
            .order_by(ChainTransaction.created_at)
        ).all()
        return [(tx, height) for tx, height in rows]

    def replacing(self, ids: Sequence[str]) -> list[ChainTransaction]:
        """The transactions that directly replace any of ``ids``."""
        return list(
            self.session.scalars(
                select(ChainTransaction).where(ChainTransaction.replaces_id.in_(list(ids)))
            )
        )

    def unbroadcast_originals(self, wallet_id: str, *, kind: str) -> list[ChainTransaction]:
        """Signed, never broadcast transactions of the wallet that replace nothing."""
        return list(
            self.session.scalars(
                select(ChainTransaction).where(
                    ChainTransaction.wallet_id == wallet_id,
                    ChainTransaction.kind == kind,
                    ChainTransaction.status == "signed",
                    ChainTransaction.replaces_id.is_(None),
                )
            )
        )

    def of_wallet_in_statuses(
        self, wallet_id: str, statuses: Iterable[str]
    ) -> list[ChainTransaction]:
        return list(
            self.session.scalars(
                select(ChainTransaction).where(
                    ChainTransaction.wallet_id == wallet_id,
                    ChainTransaction.status.in_(list(statuses)),
                )
            )
        )

    def of_wallet_with_status(self, wallet_id: str, status: str) -> list[ChainTransaction]:
        return list(
            self.session.scalars(
                select(ChainTransaction)
                .where(ChainTransaction.wallet_id == wallet_id, ChainTransaction.status == status)
                .order_by(ChainTransaction.created_at)
            )
        )

    def confirmed_above(self, height: int) -> list[ChainTransaction]:
        return list(
            self.session.scalars(
                select(ChainTransaction).where(ChainTransaction.block_height > height)
            )
        )

    def txids_among(self, txids: Sequence[str]) -> set[str]:
        """Which of ``txids`` are transactions of ours."""
        own: set[str] = set()
        for chunk in in_chunks(txids):
            own.update(
                self.session.scalars(
                    select(ChainTransaction.txid).where(ChainTransaction.txid.in_(chunk))
                )
            )
        return own

    def with_txids(self, txids: Sequence[str]) -> list[ChainTransaction]:
        return list(
            self.session.scalars(
                select(ChainTransaction).where(ChainTransaction.txid.in_(list(txids)))
            )
        )

    def of_wallet_confirmed_since(self, wallet_id: str, since: datetime) -> list[ChainTransaction]:
        return list(
            self.session.scalars(
                select(ChainTransaction).where(
                    ChainTransaction.wallet_id == wallet_id,
                    ChainTransaction.confirmed_at >= since,
                )
            )
        )

    def by_txid(self, txid: str) -> ChainTransaction | None:
        return self.session.scalar(select(ChainTransaction).where(ChainTransaction.txid == txid))
