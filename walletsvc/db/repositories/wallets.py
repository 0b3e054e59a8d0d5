"""Wallets, their key epochs and their derived addresses."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from walletsvc.db.models import Address, KeyEpoch, Wallet
from walletsvc.db.repositories.base import Repository


class WalletRepository(Repository[Wallet]):
    model = Wallet

    def by_name(self, name: str) -> Wallet | None:
        return self.session.scalar(select(Wallet).where(Wallet.name == name))

    def all_by_name(self) -> list[Wallet]:
        return list(self.session.scalars(select(Wallet).order_by(Wallet.name)))


class KeyEpochRepository(Repository[KeyEpoch]):
    model = KeyEpoch

    def of_wallet(self, wallet_id: str, epoch: int) -> KeyEpoch:
        return self.session.scalars(
            select(KeyEpoch).where(KeyEpoch.wallet_id == wallet_id, KeyEpoch.epoch == epoch)
        ).one()


class AddressRepository(Repository[Address]):
    model = Address

    def at(self, wallet_id: str, epoch: int, chain: int, index: int) -> Address:
        return self.session.scalars(
            select(Address).where(
                Address.wallet_id == wallet_id,
                Address.epoch == epoch,
                Address.chain == chain,
                Address.index == index,
            )
        ).one()

    def highest_index(self, wallet_id: str, epoch: int, chain: int) -> int | None:
        return self.session.scalar(
            select(func.max(Address.index)).where(
                Address.wallet_id == wallet_id, Address.epoch == epoch, Address.chain == chain
            )
        )

    def current_issued(self, wallet_id: str, epoch: int, chain: int) -> Address | None:
        """The newest issued, unretired address of ``chain`` in ``epoch``."""
        return self.session.scalar(
            select(Address)
            .where(
                Address.wallet_id == wallet_id,
                Address.epoch == epoch,
                Address.chain == chain,
                Address.issued_at.is_not(None),
                Address.retired_at.is_(None),
            )
            .order_by(Address.index.desc())
            .limit(1)
        )

    def issued(self, wallet_id: str, chain: int, *, limit: int, offset: int) -> Sequence[Address]:
        return list(
            self.session.scalars(
                select(Address)
                .where(
                    Address.wallet_id == wallet_id,
                    Address.chain == chain,
                    Address.issued_at.is_not(None),
                )
                .order_by(Address.epoch.desc(), Address.index.desc())
                .limit(limit)
                .offset(offset)
            )
        )
