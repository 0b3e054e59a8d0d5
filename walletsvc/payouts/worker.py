"""The payout worker: approved payouts -> signed, stored, broadcast transactions.

Crash safety rests on one ordering: a transaction is signed and stored (with its inputs
reserved and its payouts marked ``signed``) in one DB transaction, and only a committed
``signed`` row is ever broadcast. After a crash anywhere, the next pass finds the stored
transaction and re-broadcasts the very same bytes (broadcast is idempotent); it never signs a
second transaction for a payout that already has one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

from walletsvc.config import Settings
from walletsvc.db.database import INTEGRITY_FAILURE, Database, UnitOfWork
from walletsvc.db.models import (
    ChainTransaction,
    Wallet,
    Withdrawal,
    utcnow,
)
from walletsvc.db.tags import withdrawal_authorization_message
from walletsvc.domain.canonical import canonical_json
from walletsvc.domain.errors import (
    DomainError,
    SigningRefused,
    VerificationFailed,
)
from walletsvc.domain.ports import SignerPort
from walletsvc.domain.transaction import ApprovedPayout, OutputPurpose, TransactionPlan
from walletsvc.domain.txplan import largest_fitting_batch, plan_payouts
from walletsvc.domain.withdrawal import WithdrawalStatus, transition
from walletsvc.keys.integrity import RowTagger
from walletsvc.payouts.intake import approval_content
from walletsvc.payouts.signing import SigningPipeline, spendable_coins, tip_height
from walletsvc.wallets.freezes import withdrawals_freeze
from walletsvc.wallets.service import next_change_path

log = logging.getLogger(__name__)
ACTOR = "system:worker"


@dataclass
class WorkerReport:
    signed_txids: list[str] = field(default_factory=list)
    broadcast_txids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PayoutWorker:
    def __init__(self, db: Database, tags: RowTagger, pipeline: SigningPipeline) -> None:
        self.db = db
        self.tags = tags
        self.pipeline = pipeline
        self.settings: Settings = pipeline.settings

    @property
    def signer(self) -> SignerPort:
        """The pipeline's signer (swapped here by fault-injection tests)."""
        return self.pipeline.signer

    @signer.setter
    def signer(self, signer: SignerPort) -> None:
        self.pipeline.signer = signer

    def run_once(self) -> WorkerReport:
        report = WorkerReport()
        self._refuse_paid_again()
        with self.db.read() as uow:
            wallet_ids = uow.withdrawals.wallets_with_unsigned_approved()
        for wallet_id in wallet_ids:
            if not self._batch_ready(wallet_id):
                continue
            try:
                txid = self.sign_approved(wallet_id)
            except (SigningRefused, VerificationFailed) as exc:
                log.error("wallet %s: the signer refused its own work: %s", wallet_id, exc.code)
                report.errors.append(exc.message)
                self.pipeline.report_failure(wallet_id, exc)
                continue
            except DomainError as exc:
                log.warning("wallet %s: cannot sign payouts yet: %s", wallet_id, exc.message)
                report.errors.append(exc.message)
                self.pipeline.report_failure(wallet_id, exc)  # only integrity alarms go on
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
        with self.db.read() as uow:
            count, oldest = uow.withdrawals.unsigned_approved_backlog(wallet_id)
        if count >= self.settings.max_batch_outputs or oldest is None:
            return True
        if oldest.tzinfo is None:  # SQLite hands back naive UTC from aggregates
            oldest = oldest.replace(tzinfo=UTC)
        return (utcnow() - oldest).total_seconds() >= wait

    # -- signing -------------------------------------------------------------------------

    def sign_approved(self, wallet_id: str) -> str | None:
        """Sign one batch of the wallet's approved payouts; store it; return its txid."""
        # The wallet's lock: intake and signing of other wallets go on meanwhile.
        with self.db.write(wallet_id=wallet_id, honour_freeze=True) as uow:
            wallet = uow.wallets.get(wallet_id)
            assert wallet is not None
            # Checked inside the locked claim, through the freeze gate: a freeze committed
            # before this point is seen, and one applied now waits for this claim to commit.
            if withdrawals_freeze(uow, wallet.id) is not None:
                return None
            payouts = self._authorised_payouts(uow, wallet)
            if not payouts:
                return None
            tx, plan = sign_payout_batch(uow, self.pipeline, wallet, payouts, split=True)
            # Those the batch left out (weight, fee cap) stay approved for the next one.
            signed = [w for w in payouts if w.transaction_id == tx.id]
            uow.audit(
                ACTOR,
                "transaction.signed",
                "chain_transaction",
                tx.id,
                {
                    "txid": tx.txid,
                    "fee_sat": tx.fee_sat,
                    "vsize": tx.vsize,
                    "withdrawals": [w.id for w in signed],
                    "inputs": [f"{c.txid}:{c.vout}" for c in plan.inputs],
                },
            )
            return tx.txid

    def _authorised_payouts(self, uow: UnitOfWork, wallet: Wallet) -> list[Withdrawal]:
        """Approved payouts whose authorisation tag verifies; tampered rows fail loudly."""
        rows = uow.withdrawals.unsigned_approved(wallet.id, limit=self.settings.max_batch_outputs)
        good = []
        for row in rows:
            if row.authorization_mac and self.tags.verify(
                withdrawal_authorization_message(row), row.authorization_mac
            ):
                good.append(row)
                continue
            _fail_tampered(uow, row, "integrity check failed: the approved payout row was altered")
        return good

    def _refuse_paid_again(self) -> None:
        """A paid payout set back to ``approved`` with its transaction link kept: its tag
        still verifies (it covers what is paid, not whether it was), so it is caught by the
        link. (With the link deleted too, only the audit log and, once it is a process of its
        own, the signer's ledger of what it signed remember it.)"""
        with self.db.read() as uow:
            if not uow.withdrawals.approved_with_transaction():
                return
        with self.db.write() as uow:
            for row in uow.withdrawals.approved_with_transaction():
                _fail_tampered(
                    uow,
                    row,
                    "integrity check failed: an approved payout already belongs to a"
                    f" transaction ({row.transaction_id})",
                )

    # -- broadcasting --------------------------------------------------------------------

    def broadcast_signed(self, report: WorkerReport | None = None) -> list[str]:
        return self.pipeline.broadcast_signed(None if report is None else report.errors)


def _fail_tampered(uow: UnitOfWork, row: Withdrawal, reason: str) -> None:
    """Never sign ``row``: fail it and audit ``integrity.failure`` (the risk monitor freezes
    its wallet on that event)."""
    row.status = transition(row.status, WithdrawalStatus.FAILED).value
    row.failure_reason = reason
    row.updated_at = utcnow()
    uow.audit(
        ACTOR,
        INTEGRITY_FAILURE,
        "withdrawal",
        row.id,
        {"reason": reason, "destination": row.destination, "amount_sat": row.amount_sat},
    )
    log.error("withdrawal %s failed its integrity check; not signing it", row.id)


def approved_payout(w: Withdrawal, *, reviewed: bool | None = None) -> ApprovedPayout:
    """What the signer is asked to pay for ``w``. A payout its policy decision sent to
    approvals carries the content approvers reviewed, rebuilt from the row as it is now: the
    signer counts the decisions it recorded on that content's digest, so a row rewritten after
    the approvals finds none and is refused. ``reviewed``: whether the decision sent it to
    approvals, when the caller read that for a whole batch (else read from ``w``)."""
    if reviewed is None:
        reviewed = (w.decision or {}).get("outcome") == "require_approval"
    approval = None
    if reviewed:
        approval = canonical_json(approval_content(w)).decode()
    return ApprovedPayout(w.id, bytes.fromhex(w.script_pubkey), w.amount_sat, approval)


def sign_payout_batch(
    uow: UnitOfWork,
    pipeline: SigningPipeline,
    wallet: Wallet,
    payouts: list[Withdrawal],
    *,
    replaces_id: str | None = None,
    split: bool = False,
) -> tuple[ChainTransaction, TransactionPlan]:
    """Plan, sign and store one transaction paying ``payouts``; mark them signed.

    With ``split``, a batch that would exceed the standard weight or the fee cap pays only
    the longest leading part of ``payouts`` that fits (``largest_fitting_batch``); the rest
    stay approved for the next batch. The caller reads which ones from the plan.
    """
    tip = tip_height(uow)
    change_path, change_script = next_change_path(uow, wallet)
    settings = pipeline.settings
    rate = pipeline.fee_rate()
    coins = spendable_coins(uow, wallet)
    reviewed = uow.withdrawals.sent_to_approvals([w.id for w in payouts])
    approved = [approved_payout(w, reviewed=w.id in reviewed) for w in payouts]

    def plan_for(batch: Sequence[ApprovedPayout]) -> TransactionPlan:
        return plan_payouts(
            coins,
            batch,
            change_script=change_script,
            change_path=change_path,
            fee_rate_sat_per_vb=rate,
            max_fee_sat=settings.max_fee_sat,
            min_confirmations=settings.min_confirmations,
            locktime=max(tip, 0),
        )

    plan = largest_fitting_batch(plan_for, approved) if split else plan_for(approved)
    if split:
        count = sum(o.purpose is OutputPurpose.PAYOUT for o in plan.outputs)
        payouts, approved = payouts[:count], approved[:count]
    tx = pipeline.sign_and_store(
        uow,
        wallet=wallet,
        plan=plan,
        kind="payout",
        rate=rate,
        approved=approved,
        replaces_id=replaces_id,
    )
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
