"""From a plan to a stored, signed transaction: the one path every signing use case takes.

Payout batches, sweeps, fee bumps and rotation re-signs all end here: the HotSigner re-checks
and signs, and the row is stored as `signed` inside the caller's locked transaction. Only a
committed `signed` row is ever broadcast (walletsvc.payouts.worker), so a crash at any point
leaves either nothing or the exact bytes to re-broadcast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from walletsvc.config import Settings
from walletsvc.db.database import UnitOfWork
from walletsvc.db.models import (
    Address,
    ChainTransaction,
    Utxo,
    Wallet,
)
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import DomainError, SigningRefused, VerificationFailed
from walletsvc.domain.network import Network
from walletsvc.domain.ports import ChainBackend
from walletsvc.domain.transaction import ApprovedPayout, Coin, KeyPath, TransactionPlan
from walletsvc.keys.keystore import EncryptedSeed
from walletsvc.keys.signer import HotSigner

# Called (outside the failed transaction) when the signer refuses its own work or the kernel
# refuses a signature: the risk monitor freezes the wallet (Runtime.open wires it).
SignerFailureHook = Callable[[str, DomainError], None]


def report_signer_failure(hook: SignerFailureHook | None, wallet_id: str, exc: DomainError) -> None:
    """Pass SigningRefused/VerificationFailed to ``hook``; other errors are not integrity alarms."""
    if hook is not None and isinstance(exc, SigningRefused | VerificationFailed):
        hook(wallet_id, exc)


def tip_height(uow: ReadUnitOfWork) -> int:
    """The highest block the scanner has recorded (our view of the chain tip)."""
    return uow.scanned_blocks.tip_height()


def fee_rate(
    chain: ChainBackend, settings: Settings, *, target_blocks: int | None = None, floor: int = 0
) -> int:
    """The chain's estimate, clamped to the configured floor (or ``floor``) and ceiling."""
    estimate = chain.fee_rate_sat_per_vb(target_blocks or settings.confirmation_target_blocks)
    lowest = max(settings.fee_floor_sat_per_vb, floor)
    return max(lowest, min(estimate, settings.fee_ceiling_sat_per_vb))


def to_coins(uow: ReadUnitOfWork, rows: Sequence[tuple[Utxo, Address]]) -> list[Coin]:
    tip = tip_height(uow)
    return [
        Coin(
            txid=u.txid,
            vout=u.vout,
            amount_sat=u.amount_sat,
            script_pubkey=bytes.fromhex(u.script_pubkey),
            key_path=KeyPath(a.epoch, a.chain, a.index),
            confirmations=0 if u.block_height is None else tip - u.block_height + 1,
            is_coinbase=u.is_coinbase,
        )
        for u, a in rows
    ]


def spendable_coins(uow: ReadUnitOfWork, wallet: Wallet) -> list[Coin]:
    """Confirmed, unspent, unreserved coins of the wallet's current key epoch.

    Coins of retired epochs are never spent to a payee: after a rotation they go to cold
    storage only (walletsvc.incident.rotation).
    """
    return to_coins(uow, uow.utxos.spendable_with_addresses(wallet.id, wallet.current_epoch))


def seeds_for(
    uow: ReadUnitOfWork, wallet: Wallet, plan: TransactionPlan
) -> dict[int, EncryptedSeed]:
    """The encrypted seeds the signer needs: every input's epoch and the current one."""
    epochs = {c.key_path.epoch for c in plan.inputs} | {wallet.current_epoch}
    rows = uow.key_epochs.of_wallet_in(wallet.id, epochs)
    return {row.epoch: EncryptedSeed.from_string(row.encrypted_seed) for row in rows}


def reserve_inputs(uow: ReadUnitOfWork, plan: TransactionPlan, tx_id: str) -> None:
    """Mark the plan's coins as spent by ``tx_id`` so coin selection never offers them again."""
    for coin in plan.inputs:
        utxo = uow.utxos.by_outpoint(coin.txid, coin.vout)
        assert utxo is not None and utxo.reserved_by is None
        utxo.reserved_by = tx_id


def sign_and_store(
    uow: UnitOfWork,
    signer: HotSigner,
    *,
    wallet: Wallet,
    plan: TransactionPlan,
    kind: str,
    rate: int,
    max_fee_sat: int,
    approved: Sequence[ApprovedPayout] = (),
    sweep_scripts: frozenset[bytes] = frozenset(),
    replaces_id: str | None = None,
) -> ChainTransaction:
    """Have the signer check and sign ``plan``; store the result as a `signed` row.

    The caller reserves the inputs (fresh, or taken over from a replaced transaction) and
    moves its payouts, in the same transaction.
    """
    signed = signer.sign(
        wallet=wallet.name,
        network=Network(wallet.network),
        seeds=seeds_for(uow, wallet, plan),
        plan=plan,
        approved=approved,
        sweep_scripts=sweep_scripts,
        max_fee_sat=max_fee_sat,
    )
    tx = ChainTransaction(
        wallet_id=wallet.id,
        kind=kind,
        status="signed",
        txid=signed.txid,
        raw_tx=signed.raw.hex(),
        fee_sat=signed.fee_sat,
        vsize=signed.vsize,
        fee_rate_sat_per_vb=rate,
        replaces_id=replaces_id,
    )
    uow.transactions.add(tx, flush=True)
    return tx
