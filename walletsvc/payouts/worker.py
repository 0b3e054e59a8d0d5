"""The payout worker: approved payouts -> signed, stored, broadcast transactions.

Crash safety rests on one ordering: a transaction is signed and stored (with its inputs
reserved and its payouts marked ``signed``) in one DB transaction, and only a committed
``signed`` row is ever broadcast. After a crash anywhere, the next pass finds the stored
transaction and re-broadcasts the very same bytes (broadcast is idempotent); it never signs a
second transaction for a payout that already has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC

from sqlalchemy import func, select

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import (
    ChainTransaction,
    Wallet,
    Withdrawal,
    utcnow,
)
from walletsvc.db.tags import withdrawal_authorization_message
from walletsvc.domain.errors import (
    ChainRejected,
    DependencyUnavailable,
    DomainError,
    SigningRefused,
    VerificationFailed,
)
from walletsvc.domain.ports import ChainBackend
from walletsvc.domain.transaction import ApprovedPayout, TransactionPlan
from walletsvc.domain.txplan import plan_payouts
from walletsvc.domain.withdrawal import WithdrawalStatus, transition
from walletsvc.incident.freeze import withdrawals_freeze
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.signer import HotSigner
from walletsvc.payouts.signing import (
    SignerFailureHook,
    fee_rate,
    report_signer_failure,
    reserve_inputs,
    sign_and_store,
    spendable_coins,
    tip_height,
)
from walletsvc.wallets.service import next_change_path

log = logging.getLogger(__name__)
ACTOR = "system:worker"


@dataclass
class WorkerReport:
    signed_txids: list[str] = field(default_factory=list)
    broadcast_txids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PayoutWorker:
    def __init__(
        self,
        db: Database,
        tags: RowTagger,
        chain: ChainBackend,
        signer: HotSigner,
        settings: Settings,
    ) -> None:
        self.db = db
        self.tags = tags
        self.chain = chain
        self.signer = signer
        self.settings = settings
        # The risk monitor's hook (Runtime.open): the signer refusing its own work freezes.
        self.on_signer_failure: SignerFailureHook | None = None

    def run_once(self) -> WorkerReport:
        report = WorkerReport()
        with self.db.read() as session:
            wallet_ids = list(
                session.scalars(
                    select(Withdrawal.wallet_id)
                    .where(
                        Withdrawal.status == WithdrawalStatus.APPROVED.value,
                        Withdrawal.transaction_id.is_(None),
                    )
                    .distinct()
                )
            )
        for wallet_id in wallet_ids:
            if not self._batch_ready(wallet_id):
                continue
            try:
                txid = self.sign_approved(wallet_id)
            except (SigningRefused, VerificationFailed) as exc:
                log.error("wallet %s: the signer refused its own work: %s", wallet_id, exc.code)
                report.errors.append(exc.message)
                report_signer_failure(self.on_signer_failure, wallet_id, exc)
                continue
            except DomainError as exc:
                log.warning("wallet %s: cannot sign payouts yet: %s", wallet_id, exc.message)
                report.errors.append(exc.message)
                continue
            if txid is not None:
                report.signed_txids.append(txid)
        report.broadcast_txids.extend(self.broadcast_signed(report))
        return report

    def _batch_ready(self, wallet_id: str) -> bool:
        """Send a batch when it is full or its oldest payout has waited batch_max_wait_s."""
        wait = self.settings.batch_max_wait_s
        if wait <= 0:
            return True
        with self.db.read() as session:
            count, oldest = session.execute(
                select(func.count(Withdrawal.id), func.min(Withdrawal.updated_at)).where(
                    Withdrawal.wallet_id == wallet_id,
                    Withdrawal.status == WithdrawalStatus.APPROVED.value,
                    Withdrawal.transaction_id.is_(None),
                )
            ).one()
        if count >= self.settings.max_batch_outputs or oldest is None:
            return True
        if oldest.tzinfo is None:  # SQLite hands back naive UTC from aggregates
            oldest = oldest.replace(tzinfo=UTC)
        return (utcnow() - oldest).total_seconds() >= wait

    # -- signing -------------------------------------------------------------------------

    def sign_approved(self, wallet_id: str) -> str | None:
        """Sign one batch of the wallet's approved payouts; store it; return its txid."""
        with self.db.write() as uow:
            s = uow.session
            wallet = s.get(Wallet, wallet_id)
            assert wallet is not None
            # Checked inside the locked claim: a freeze committed before this point is seen.
            if withdrawals_freeze(s, wallet.id) is not None:
                return None
            payouts = self._authorised_payouts(uow, wallet)
            if not payouts:
                return None
            tx, plan = sign_payout_batch(
                uow, self.signer, self.chain, self.settings, wallet, payouts
            )
            uow.audit(
                ACTOR,
                "transaction.signed",
                "chain_transaction",
                tx.id,
                {
                    "txid": tx.txid,
                    "fee_sat": tx.fee_sat,
                    "vsize": tx.vsize,
                    "withdrawals": [w.id for w in payouts],
                    "inputs": [f"{c.txid}:{c.vout}" for c in plan.inputs],
                },
            )
            return tx.txid

    def _authorised_payouts(self, uow: UnitOfWork, wallet: Wallet) -> list[Withdrawal]:
        """Approved payouts whose authorisation tag verifies; tampered rows fail loudly."""
        rows = list(
            uow.session.scalars(
                select(Withdrawal)
                .where(
                    Withdrawal.wallet_id == wallet.id,
                    Withdrawal.status == WithdrawalStatus.APPROVED.value,
                    Withdrawal.transaction_id.is_(None),
                )
                .order_by(Withdrawal.created_at, Withdrawal.id)
                .limit(self.settings.max_batch_outputs)
            )
        )
        good = []
        for row in rows:
            if row.authorization_mac and self.tags.verify(
                withdrawal_authorization_message(row), row.authorization_mac
            ):
                good.append(row)
                continue
            row.status = transition(row.status, WithdrawalStatus.FAILED).value
            row.failure_reason = "integrity check failed: the approved payout row was altered"
            row.updated_at = utcnow()
            uow.audit(
                ACTOR,
                "integrity.failure",
                "withdrawal",
                row.id,
                {
                    "reason": row.failure_reason,
                    "destination": row.destination,
                    "amount_sat": row.amount_sat,
                },
            )
            log.error("withdrawal %s failed its integrity check; not signing it", row.id)
        return good

    # -- broadcasting --------------------------------------------------------------------

    def broadcast_signed(self, report: WorkerReport | None = None) -> list[str]:
        with self.db.read() as session:
            pending = list(
                session.scalars(
                    select(ChainTransaction.id)
                    .where(ChainTransaction.status == "signed")
                    .order_by(ChainTransaction.created_at)
                )
            )
        sent = []
        for tx_id in pending:
            try:
                txid = self._broadcast_one(tx_id, report)
            except DependencyUnavailable as exc:
                log.warning("chain backend unavailable; will re-broadcast later: %s", exc.message)
                break
            if txid is not None:
                sent.append(txid)
        return sent

    def _broadcast_one(self, tx_id: str, report: WorkerReport | None) -> str | None:
        """Broadcast one stored transaction while holding the write lock.

        Holding the lock across the network call is deliberate: a freeze is a write, so it
        waits for a broadcast in progress and every later broadcast sees it. Broadcasts are
        rare (one per batch) and the backend call is bounded by its timeout.
        """
        with self.db.write() as uow:
            tx = uow.session.get(ChainTransaction, tx_id)
            if tx is None or tx.status != "signed":
                return None
            if withdrawals_freeze(uow.session, tx.wallet_id) is not None:
                return None  # held until the freeze is lifted
            try:
                txid = self.chain.broadcast(bytes.fromhex(tx.raw_tx))
            except ChainRejected as exc:
                self._record_broadcast_error(uow, tx, f"{exc.message} ({exc.reason})")
                if report is not None:
                    report.errors.append(exc.message)
                return None
            if txid != tx.txid:
                log.error("backend answered txid %s for our %s", txid, tx.txid)
            self._mark_broadcast(uow, tx)
            return tx.txid

    @staticmethod
    def _mark_broadcast(uow: UnitOfWork, tx: ChainTransaction) -> None:
        tx.status = "broadcast"
        tx.broadcast_at = utcnow()
        tx.broadcast_attempts += 1
        tx.last_error = None
        for w in uow.session.scalars(
            select(Withdrawal).where(
                Withdrawal.transaction_id == tx.id,
                Withdrawal.status == WithdrawalStatus.SIGNED.value,
            )
        ):
            w.status = transition(w.status, WithdrawalStatus.BROADCAST).value
            w.updated_at = utcnow()
        uow.audit(ACTOR, "transaction.broadcast", "chain_transaction", tx.id, {"txid": tx.txid})

    @staticmethod
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


def sign_payout_batch(
    uow: UnitOfWork,
    signer: HotSigner,
    chain: ChainBackend,
    settings: Settings,
    wallet: Wallet,
    payouts: list[Withdrawal],
    *,
    replaces_id: str | None = None,
) -> tuple[ChainTransaction, TransactionPlan]:
    """Plan, sign and store one transaction paying ``payouts``; mark them signed."""
    s = uow.session
    tip = tip_height(s)
    change_path, change_script = next_change_path(uow, wallet)
    rate = fee_rate(chain, settings)
    approved = [ApprovedPayout(w.id, bytes.fromhex(w.script_pubkey), w.amount_sat) for w in payouts]
    plan = plan_payouts(
        spendable_coins(s, wallet),
        approved,
        change_script=change_script,
        change_path=change_path,
        fee_rate_sat_per_vb=rate,
        max_fee_sat=settings.max_fee_sat,
        min_confirmations=settings.min_confirmations,
        locktime=max(tip, 0),
    )
    tx = sign_and_store(
        uow,
        signer,
        wallet=wallet,
        plan=plan,
        kind="payout",
        rate=rate,
        max_fee_sat=settings.max_fee_sat,
        approved=approved,
        replaces_id=replaces_id,
    )
    reserve_inputs(s, plan, tx.id)
    for withdrawal, share in zip(payouts, split_fee(tx.fee_sat, len(payouts)), strict=True):
        withdrawal.status = transition(withdrawal.status, WithdrawalStatus.SIGNED).value
        withdrawal.transaction_id = tx.id
        withdrawal.fee_share_sat = share
        withdrawal.updated_at = utcnow()
    return tx, plan


def split_fee(fee_sat: int, parts: int) -> list[int]:
    """Each payout's share of a batch fee, to the satoshi (the remainder goes to the first)."""
    base, remainder = divmod(fee_sat, parts)
    return [base + (remainder if i == 0 else 0) for i in range(parts)]
