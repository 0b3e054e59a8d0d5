"""What the wallet knows of the chain: its UTXOs, the blocks scanned, its transactions."""

from __future__ import annotations

from sqlalchemy import func, select

from walletsvc.db.models import ChainTransaction, ScannedBlock, Utxo
from walletsvc.db.repositories.base import Repository


class UtxoRepository(Repository[Utxo]):
    model = Utxo

    def unspent_of_wallet(self, wallet_id: str) -> list[Utxo]:
        return list(
            self.session.scalars(
                select(Utxo).where(Utxo.wallet_id == wallet_id, Utxo.spent_by_txid.is_(None))
            )
        )

    def all(self) -> list[Utxo]:
        return list(self.session.scalars(select(Utxo)))


class ScannedBlockRepository(Repository[ScannedBlock]):
    model = ScannedBlock


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

    def by_txid(self, txid: str) -> ChainTransaction | None:
        return self.session.scalar(select(ChainTransaction).where(ChainTransaction.txid == txid))
