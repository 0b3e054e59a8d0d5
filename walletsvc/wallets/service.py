"""Wallets, key epochs and deposit addresses."""

from __future__ import annotations

from dataclasses import dataclass

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import Address, KeyEpoch, Wallet, utcnow
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, InvalidInput, NotFound
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SignerPort
from walletsvc.domain.transaction import CHANGE_CHAIN, RECEIVE_CHAIN, KeyPath
from walletsvc.keys.hd import AccountXpub

# BIP44's gap limit: the scanner watches this many unused addresses past the last used one, so
# a payer that skips ahead (or a restore) still finds its coins.
LOOKAHEAD = 20
MAX_LABEL_LENGTH = 200


@dataclass(frozen=True)
class NewWallet:
    wallet_id: str
    name: str
    network: Network
    account_xpub: str
    master_fingerprint: str
    first_address: str


def get_wallet(uow: ReadUnitOfWork, name: str, *, field: str = "wallet") -> Wallet:
    wallet = uow.wallets.by_name(name)
    if wallet is None:
        raise NotFound(f"no wallet named {name!r}", field=field)
    return wallet


def current_epoch(uow: ReadUnitOfWork, wallet: Wallet) -> KeyEpoch:
    return uow.key_epochs.of_wallet(wallet.id, wallet.current_epoch)


def create_wallet(
    db: Database, signer: SignerPort, *, name: str, network: Network, actor: str
) -> NewWallet:
    """The wallet and its first key epoch; the signer makes the seed and keeps it."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput("wallet names are 1-64 letters, digits, '-' or '_'", field="name")
    with db.read() as uow:
        if uow.wallets.by_name(name) is not None:
            raise Conflict(f"wallet {name!r} exists already", field="name")
    # Asked before the write: the signer's answer for epoch 1 is the same if asked again.
    seed = signer.new_epoch(name, 1)
    with db.write() as uow:
        if uow.wallets.by_name(name) is not None:
            raise Conflict(f"wallet {name!r} exists already", field="name")
        wallet = uow.wallets.add(
            Wallet(name=name, network=network.value, current_epoch=1), flush=True
        )
        epoch = KeyEpoch(
            wallet_id=wallet.id,
            epoch=1,
            account_xpub=seed.account_xpub,
            master_fingerprint=seed.master_fingerprint,
        )
        uow.key_epochs.add(epoch, flush=True)
        uow.audit(
            actor,
            "wallet.created",
            "wallet",
            wallet.id,
            {"name": name, "network": network.value, "epoch": 1, "xpub": seed.account_xpub},
        )
        first = issue_address(uow, wallet, label="initial", actor=actor)
    return NewWallet(
        wallet.id,
        name,
        network,
        seed.account_xpub,
        seed.master_fingerprint,
        first.address,
    )


def issue_address(uow: UnitOfWork, wallet: Wallet, *, label: str | None, actor: str) -> Address:
    """Issue the next receive address of the current epoch (and extend the look-ahead)."""
    if label is not None and len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"label is longer than {MAX_LABEL_LENGTH} characters", field="label")
    epoch = current_epoch(uow, wallet)
    index = epoch.next_receive_index
    epoch.next_receive_index = index + 1
    ensure_derived(uow, wallet, epoch, RECEIVE_CHAIN, index + LOOKAHEAD)
    address = uow.addresses.at(wallet.id, epoch.epoch, RECEIVE_CHAIN, index)
    address.issued_at = utcnow()
    address.label = label
    uow.audit(
        actor,
        "address.issued",
        "address",
        address.id,
        {"wallet": wallet.name, "address": address.address, "epoch": epoch.epoch, "index": index},
    )
    return address


def next_change_path(uow: UnitOfWork, wallet: Wallet) -> tuple[KeyPath, bytes]:
    """Reserve a fresh internal-chain (change) address of the current epoch."""
    epoch = current_epoch(uow, wallet)
    index = epoch.next_change_index
    epoch.next_change_index = index + 1
    ensure_derived(uow, wallet, epoch, CHANGE_CHAIN, index + LOOKAHEAD)
    xpub = AccountXpub.parse(epoch.account_xpub, Network(wallet.network))
    return KeyPath(epoch.epoch, CHANGE_CHAIN, index), xpub.script_pubkey(CHANGE_CHAIN, index)


def ensure_derived(
    uow: ReadUnitOfWork, wallet: Wallet, epoch: KeyEpoch, chain: int, up_to_index: int
) -> int:
    """Make sure addresses 0..up_to_index of (epoch, chain) exist as watched rows.

    Returns how many were derived now (0 when the window already reached ``up_to_index``).
    """
    highest = uow.addresses.highest_index(wallet.id, epoch.epoch, chain)
    start = 0 if highest is None else highest + 1
    if start > up_to_index:
        return 0
    xpub = AccountXpub.parse(epoch.account_xpub, Network(wallet.network))
    for index in range(start, up_to_index + 1):
        script = xpub.script_pubkey(chain, index)
        uow.addresses.add(
            Address(
                wallet_id=wallet.id,
                epoch=epoch.epoch,
                chain=chain,
                index=index,
                address=xpub.address(chain, index),
                script_pubkey=script.hex(),
            )
        )
    uow.addresses.flush()
    return up_to_index + 1 - start


def current_address(uow: ReadUnitOfWork, wallet: Wallet) -> Address:
    address = uow.addresses.current_issued(wallet.id, wallet.current_epoch, RECEIVE_CHAIN)
    if address is None:
        raise NotFound("no deposit address issued yet for this key epoch", field="wallet")
    return address


def list_addresses(
    uow: ReadUnitOfWork, wallet: Wallet, *, limit: int = 100, offset: int = 0
) -> list[Address]:
    return list(uow.addresses.issued(wallet.id, RECEIVE_CHAIN, limit=limit, offset=offset))
