"""Wallets, their key epochs and their derived addresses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update

from walletsvc.db.models import Address, KeyEpoch, Wallet
from walletsvc.db.repositories.base import Repository, in_chunks


class WalletRepository(Repository[Wallet]):
    model = Wallet

    def by_name(self, name: str) -> Wallet | None:
        return self.session.scalar(select(Wallet).where(Wallet.name == name))

    def all(self) -> list[Wallet]:
        return list(self.session.scalars(select(Wallet)))

    def all_by_name(self) -> list[Wallet]:
        return list(self.session.scalars(select(Wallet).order_by(Wallet.name)))

    def rotated_ids(self, *, name: str | None = None) -> list[str]:
        """Ids of wallets whose keys were ever rotated (of the one named, if given)."""
        query = select(Wallet.id).where(Wallet.current_epoch > 1)
        if name is not None:
            query = query.where(Wallet.name == name)
        return list(self.session.scalars(query))


class KeyEpochRepository(Repository[KeyEpoch]):
    model = KeyEpoch

    def of_wallet(self, wallet_id: str, epoch: int) -> KeyEpoch:
        return self.session.scalars(
            select(KeyEpoch).where(KeyEpoch.wallet_id == wallet_id, KeyEpoch.epoch == epoch)
        ).one()

    def find(self, wallet_id: str, epoch: int) -> KeyEpoch | None:
        return self.session.scalar(
            select(KeyEpoch).where(KeyEpoch.wallet_id == wallet_id, KeyEpoch.epoch == epoch)
        )

    def of_wallet_in(self, wallet_id: str, epochs: Iterable[int]) -> list[KeyEpoch]:
        return list(
            self.session.scalars(
                select(KeyEpoch).where(
                    KeyEpoch.wallet_id == wallet_id, KeyEpoch.epoch.in_(list(epochs))
                )
            )
        )

    def retire_before(self, wallet_id: str, epoch: int, now: datetime) -> None:
        """Retire the wallet's key epochs older than ``epoch``."""
        self.session.execute(
            update(KeyEpoch)
            .where(KeyEpoch.wallet_id == wallet_id, KeyEpoch.epoch < epoch)
            .where(KeyEpoch.retired_at.is_(None))
            .values(retired_at=now)
        )


class AddressRepository(Repository[Address]):
    model = Address

    def retire_before(self, wallet_id: str, epoch: int, now: datetime) -> int:
        """Retire the wallet's addresses of epochs older than ``epoch``; how many."""
        result = self.session.execute(
            update(Address)
            .where(Address.wallet_id == wallet_id, Address.epoch < epoch)
            .where(Address.retired_at.is_(None))
            .values(retired_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def at(self, wallet_id: str, epoch: int, chain: int, index: int) -> Address:
        return self.session.scalars(
            select(Address).where(
                Address.wallet_id == wallet_id,
                Address.epoch == epoch,
                Address.chain == chain,
                Address.index == index,
            )
        ).one()

    def ours_among(self, scripts: Sequence[str]) -> set[str]:
        """Which of ``scripts`` (hex) are addresses of any of our wallets."""
        return set(
            self.session.scalars(
                select(Address.script_pubkey).where(Address.script_pubkey.in_(list(scripts)))
            )
        )

    def with_scripts(self, scripts: Sequence[str]) -> dict[str, Address]:
        """Our addresses among ``scripts`` (hex), by script: one indexed look-up per chunk."""
        found: dict[str, Address] = {}
        for chunk in in_chunks(scripts):
            for address in self.session.scalars(
                select(Address).where(Address.script_pubkey.in_(chunk))
            ):
                found[address.script_pubkey] = address
        return found

    def all(self) -> list[Address]:
        return list(self.session.scalars(select(Address)))

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

    def of_wallet_by_script(self, wallet_id: str, script_pubkey: str) -> Address | None:
        return self.session.scalar(
            select(Address).where(
                Address.wallet_id == wallet_id, Address.script_pubkey == script_pubkey
            )
        )

    def scripts_of_wallet_among(self, wallet_id: str, scripts: Sequence[str]) -> list[str]:
        """Which of ``scripts`` (hex) belong to the wallet."""
        return list(
            self.session.scalars(
                select(Address.script_pubkey).where(
                    Address.wallet_id == wallet_id, Address.script_pubkey.in_(list(scripts))
                )
            )
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
