"""From a plan to a stored, signed transaction: the one path every signing use case takes.

Payout batches, sweeps, fee bumps and rotation re-signs all go through ``SigningPipeline``:
the signer process (walletsvc.signer, reached through its client) re-checks the plan against
its own ledger and policy and signs (the kernel verifies every signature), and the row is stored
as `signed` with its coins reserved inside the caller's locked transaction. Only a committed
`signed` row is ever broadcast, so a crash at any point leaves either nothing or the exact
bytes to re-broadcast.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from walletsvc.config import Settings
from walletsvc.db.database import GENESIS_HASH, Database, UnitOfWork
from walletsvc.db.models import (
    Address,
    ChainTransaction,
    Utxo,
    Wallet,
    utcnow,
)
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import (
    ChainRejected,
    DependencyUnavailable,
    DomainError,
    SigningRefused,
    VerificationFailed,
)
from walletsvc.domain.ports import ChainBackend, SignerPort
from walletsvc.domain.transaction import ApprovedPayout, Coin, KeyPath, TransactionPlan
from walletsvc.domain.withdrawal import WithdrawalStatus, transition
from walletsvc.governance.policies import IntegrityFailure
from walletsvc.metrics import SIGNER_REFUSALS, SIGNER_SECONDS
from walletsvc.wallets.freezes import withdrawals_freeze

log = logging.getLogger(__name__)
ACTOR = "system:worker"  # broadcasts are the worker's, whichever service signed

# Called (outside the failed transaction) when the signer refuses its own work or the kernel
# refuses a signature: the risk monitor freezes the wallet (Runtime.open wires it).
SignerFailureHook = Callable[[str, DomainError], None]


def report_signer_failure(hook: SignerFailureHook | None, wallet_id: str, exc: DomainError) -> None:
    """Pass SigningRefused/VerificationFailed, and a governed row failing its tag on the way
    to a signature (a swapped cold destination, say), to ``hook``; other errors are not
    integrity alarms."""
    if hook is not None and isinstance(exc, SigningRefused | VerificationFailed | IntegrityFailure):
        hook(wallet_id, exc)


# Held from reading the audit head to the signer's answer, by every signature and by the
# pass's anchor (Runtime.anchor_audit): the heads this process hands the signer then never go
# back, which the signer would refuse as a log cut short. (Each head is read in a transaction
# that sees every commit before it: SQLite's write lock; PostgreSQL's READ COMMITTED.)
AUDIT_HEAD_ORDER = threading.Lock()


def audit_head(uow: ReadUnitOfWork) -> tuple[int, str]:
    """The audit log's head as the signer anchors it: (last seq, its hash)."""
    head = uow.audit_events.head()
    if head is None:
        return 0, GENESIS_HASH
    return head.last_seq, head.last_hash


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


def reserve_inputs(uow: ReadUnitOfWork, plan: TransactionPlan, tx_id: str) -> None:
    """Mark the plan's coins as spent by ``tx_id`` so coin selection never offers them again."""
    for coin in plan.inputs:
        utxo = uow.utxos.by_outpoint(coin.txid, coin.vout)
        assert utxo is not None and utxo.reserved_by is None
        utxo.reserved_by = tx_id


Reservation = Callable[[UnitOfWork, TransactionPlan, str], None]


class SigningPipeline:
    """Sign -> store -> reserve -> broadcast, the one sequence every signing service shares.

    The services keep their own policy (what to spend, where, at what fee) and hand the plan
    here. Signing, storing and reserving happen in the caller's locked write transaction, so
    a crash leaves either nothing or a committed `signed` row; only such a row is broadcast,
    each holding the freeze gate, so a freeze waits for a broadcast in progress and every
    later broadcast sees it.
    """

    def __init__(
        self,
        db: Database,
        chain: ChainBackend,
        signer: SignerPort,
        settings: Settings,
        *,
        on_signer_failure: SignerFailureHook | None = None,
    ) -> None:
        self.db = db
        self.chain = chain
        self.signer = signer
        self.settings = settings
        # The risk monitor's hook (Runtime.open): the signer refusing its own work freezes.
        self.on_signer_failure = on_signer_failure

    # -- signing -------------------------------------------------------------------------

    def fee_rate(self, *, target_blocks: int | None = None, floor: int = 0) -> int:
        return fee_rate(self.chain, self.settings, target_blocks=target_blocks, floor=floor)

    def sign_and_store(
        self,
        uow: UnitOfWork,
        *,
        wallet: Wallet,
        plan: TransactionPlan,
        kind: str,
        rate: int,
        approved: Sequence[ApprovedPayout] = (),
        sweep_scripts: frozenset[bytes] = frozenset(),
        replaces_id: str | None = None,
        reserve: Reservation = reserve_inputs,
        max_fee_sat: int | None = None,
    ) -> ChainTransaction:
        """Have the signer check and sign ``plan``; store it as `signed`; reserve its coins.

        ``reserve`` marks the inputs as spent by the new row: fresh coins by default, or
        coins taken over from a replaced or voided transaction. The caller moves its payouts
        in the same transaction. ``max_fee_sat`` replaces the configured fee cap for this one
        transaction (the theft shield's budget, from the policy); the signer holds it to its
        own cap (a shield answer: the shield budget of its own policy copy).
        """
        started = time.perf_counter()
        try:
            with AUDIT_HEAD_ORDER:
                # Every event before this signature is then pinned by the signer's anchor.
                signed = self.signer.sign(
                    wallet=wallet.name,
                    kind="fee_bump" if replaces_id is not None else kind,
                    plan=plan,
                    approved=approved,
                    sweep_scripts=sweep_scripts,
                    max_fee_sat=self.settings.max_fee_sat if max_fee_sat is None else max_fee_sat,
                    audit_head=audit_head(uow),
                )
        except DomainError as exc:
            SIGNER_REFUSALS.labels(kind, exc.code).inc()
            raise
        SIGNER_SECONDS.labels(kind).observe(time.perf_counter() - started)
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
        reserve(uow, plan, tx.id)
        return tx

    def report_failure(self, wallet_id: str, exc: DomainError) -> None:
        """After the failed transaction: a signer or kernel refusal goes to the one hook."""
        report_signer_failure(self.on_signer_failure, wallet_id, exc)

    def attempt(
        self, wallet_id: str, step: Callable[[str], str | None], *, waiting: str
    ) -> str | None:
        """Run one background signing step for a wallet; returns the txid it signed, if any.

        A domain error leaves the step to the next pass (logged as ``waiting``); a signer or
        kernel refusal among them goes to the hook once its transaction has rolled back.
        """
        try:
            return step(wallet_id)
        except DomainError as exc:
            log.warning("wallet %s: %s: %s", wallet_id, waiting, exc.message)
            self.report_failure(wallet_id, exc)
            return None

    # -- broadcasting --------------------------------------------------------------------

    def broadcast_signed(self, errors: list[str] | None = None) -> list[str]:
        """Broadcast every committed `signed` row, oldest first; held while frozen."""
        with self.db.read() as uow:
            pending = uow.transactions.ids_with_status("signed")
        return self.broadcast(pending, errors=errors)

    def broadcast(
        self,
        tx_ids: Sequence[str],
        *,
        despite_freeze: bool = False,
        own_fee_rate_guard: bool = False,
        errors: list[str] | None = None,
    ) -> list[str]:
        """Broadcast these stored transactions (re-broadcast is idempotent); their txids.

        ``despite_freeze``: rotation sweeps and the theft shield's answers pay only the
        MAC-checked cold destination, which is where a freeze wants the money anyway.
        ``own_fee_rate_guard``: the node's maxfeerate guard is set to each transaction's own
        rate (the shield outbids a thief above the usual ceiling, on purpose).
        """
        sent = []
        for tx_id in tx_ids:
            try:
                txid = self._broadcast_one(
                    tx_id,
                    despite_freeze=despite_freeze,
                    own_fee_rate_guard=own_fee_rate_guard,
                    errors=errors,
                )
            except DependencyUnavailable as exc:
                log.warning("chain backend unavailable; will re-broadcast later: %s", exc.message)
                break
            if txid is not None:
                sent.append(txid)
        return sent

    def _broadcast_one(
        self,
        tx_id: str,
        *,
        despite_freeze: bool,
        own_fee_rate_guard: bool = False,
        errors: list[str] | None,
    ) -> str | None:
        """Broadcast one stored transaction holding its own lock and the freeze gate.

        Holding the freeze gate across the network call is deliberate: a freeze waits for a
        broadcast in progress and every later broadcast sees it. Broadcasts are
        rare (one per batch) and the backend call is bounded by its timeout.
        """
        # Its own lock, not the wallet's: intake for the wallet does not wait for the network
        # call; the freeze gate (taken by the check below) is what a freeze waits for.
        with self.db.write(also_lock=[f"transaction:{tx_id}"], honour_freeze=True) as uow:
            tx = uow.transactions.get(tx_id)
            if tx is None or tx.status != "signed":
                return None
            if not despite_freeze and withdrawals_freeze(uow, tx.wallet_id) is not None:
                return None  # held until the freeze is lifted
            guard = -(-tx.fee_sat // tx.vsize) if own_fee_rate_guard else None
            try:
                txid = self.chain.broadcast(bytes.fromhex(tx.raw_tx), max_fee_rate_sat_per_vb=guard)
            except ChainRejected as exc:
                _record_broadcast_error(uow, tx, f"{exc.message} ({exc.reason})")
                if errors is not None:
                    errors.append(exc.message)
                return None
            if txid != tx.txid:
                log.error("backend answered txid %s for our %s", txid, tx.txid)
            _mark_broadcast(uow, tx)
            return tx.txid


def _mark_broadcast(uow: UnitOfWork, tx: ChainTransaction) -> None:
    tx.status = "broadcast"
    tx.broadcast_at = utcnow()
    tx.broadcast_attempts += 1
    tx.last_error = None
    # One statement for the whole batch (a payout round's can hold thousands of payouts).
    broadcast = transition(WithdrawalStatus.SIGNED, WithdrawalStatus.BROADCAST)
    uow.withdrawals.move_in_transaction(
        tx.id, WithdrawalStatus.SIGNED.value, broadcast.value, now=tx.broadcast_at
    )
    uow.audit(ACTOR, "transaction.broadcast", "chain_transaction", tx.id, {"txid": tx.txid})


def _record_broadcast_error(uow: UnitOfWork, tx: ChainTransaction, error: str) -> None:
    tx.broadcast_attempts += 1
    tx.last_error = error
    log.error("broadcast of %s refused: %s", tx.txid, error)
    if tx.broadcast_attempts == 1:
        uow.audit(
            ACTOR,
            "transaction.broadcast_refused",
            "chain_transaction",
            tx.id,
            {"txid": tx.txid, "error": error},
        )
