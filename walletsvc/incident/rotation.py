"""Key rotation: a governed action (kind ``key_rotation``, quorum ``governance.key_rotation``).

At quorum, in the approval's own transaction:
  * a new key epoch with a fresh seed (only its ciphertext is stored; its xpub is audited);
  * every address of older epochs is retired and a new deposit address of the new epoch is
    issued, so ``deposit-addresses/current`` changes in the same commit;
  * payout transactions signed but never broadcast are VOIDED (status ``voided``): the worker
    only ever broadcasts ``signed`` rows, under the write lock, so a voided one never leaves.
    Their payouts stay ``signed`` (held) until they are re-signed, see below.

Then ``RotationService.run`` (every background pass, or ``walletsvc rotate --sweep``):
  * sweeps every confirmed coin of older epochs to cold storage at a high fee priority
    (``rotation_sweep_target_blocks``), including coins that voided transactions had
    reserved, and broadcasts it even under a freeze: it pays only the MAC-checked cold
    destination, which is where a freeze wants the money anyway;
  * re-signs held payouts from the new epoch only once every input of their voided
    transaction has been spent on chain by another transaction. Why wait: a "signed" row is
    normally unbroadcast, but a crash between a broadcast and its commit leaves a broadcast
    transaction marked "signed". The rotation sweep spends the same coins, so once it
    confirms the voided transaction can never confirm, and re-signing cannot pay twice.
  * the scanner flags a deposit to a retired address (``deposit.to_retired_address``) and the
    next pass sweeps it to cold with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bitcoin.core import CTransaction, b2lx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import (
    Address,
    ChainTransaction,
    KeyEpoch,
    Utxo,
    Wallet,
    Withdrawal,
)
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.models_risk import KeyRotation
from walletsvc.db.models_treasury import Sweep
from walletsvc.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import Coin
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import ROW_MAC, active_policy
from walletsvc.governance.staff import now_utc
from walletsvc.incident.freeze import MAX_REASON_LENGTH, withdrawals_freeze
from walletsvc.keys.kek import Kek
from walletsvc.keys.keystore import generate_seed
from walletsvc.payouts.intake import authorization_message
from walletsvc.payouts.signing import SigningPipeline, coins_query, to_coins
from walletsvc.payouts.worker import sign_payout_batch
from walletsvc.treasury.sweeps import sign_sweep_to_cold
from walletsvc.wallets.service import current_address, get_wallet, issue_address

log = logging.getLogger(__name__)
KIND = "key_rotation"
PENDING = "pending_approval"
ACTOR = "system:rotation"
VOIDED = "voided"
SWEEP_TRIGGER = "rotation"


# --- Proposing -------------------------------------------------------------------------------


def propose(
    db: Database,
    kek: Kek,
    *,
    wallet: str,
    reason: str,
    requester: Requester,
    now: datetime | None = None,
) -> KeyRotation:
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"a reason (1-{MAX_REASON_LENGTH} characters) is required", field="reason"
        )
    moment = now_utc(now)
    with db.write() as uow:
        row_wallet = get_wallet(uow.session, wallet)
        if _pending(uow.session, row_wallet.id) is not None:
            raise Conflict("a rotation of this wallet is already waiting for approval")
        document = active_policy(uow.session, kek, row_wallet).document
        row = KeyRotation(
            wallet_id=row_wallet.id,
            reason=text,
            status=PENDING,
            from_epoch=row_wallet.current_epoch,
            requested_by=requester.actor,
            created_at=moment,
        )
        approvals.governed_action(
            uow,
            kek,
            row,
            kind=KIND,
            approvers=Approvers.from_policy(document, "key_rotation", moment),
            requester=requester,
            now=moment,
            event="key_rotation.proposed",
            subject_type="key_rotation",
            details=lambda: {"wallet": wallet, "from_epoch": row.from_epoch, "reason": text},
        )
        return row


def _pending(session: Session, wallet_id: str) -> KeyRotation | None:
    return session.scalar(
        select(KeyRotation).where(KeyRotation.wallet_id == wallet_id, KeyRotation.status == PENDING)
    )


def get_rotation(session: Session, rotation_id: str) -> KeyRotation:
    row = session.get(KeyRotation, rotation_id)
    if row is None:
        raise NotFound("no such key rotation", field="id")
    return row


# --- At quorum -------------------------------------------------------------------------------


def rotate(ctx: KindContext, row: KeyRotation, approved_by: list[str]) -> None:
    """The new epoch, retired addresses, the new current address, voided unbroadcast txs."""
    uow, s = ctx.uow, ctx.uow.session
    wallet = s.get(Wallet, row.wallet_id)
    assert wallet is not None
    new_epoch = wallet.current_epoch + 1
    network = Network(wallet.network)
    seed = generate_seed(ctx.kek, wallet=wallet.name, epoch=new_epoch, network=network)
    s.add(
        KeyEpoch(
            wallet_id=wallet.id,
            epoch=new_epoch,
            encrypted_seed=seed.encrypted.to_string(),
            account_xpub=seed.account_xpub,
            master_fingerprint=seed.master_fingerprint,
        )
    )
    s.execute(
        update(KeyEpoch)
        .where(KeyEpoch.wallet_id == wallet.id, KeyEpoch.epoch < new_epoch)
        .where(KeyEpoch.retired_at.is_(None))
        .values(retired_at=ctx.now)
    )
    retired = s.execute(
        update(Address)
        .where(Address.wallet_id == wallet.id, Address.epoch < new_epoch)
        .where(Address.retired_at.is_(None))
        .values(retired_at=ctx.now)
    ).rowcount  # type: ignore[attr-defined]
    wallet.current_epoch = new_epoch
    s.flush()
    address = issue_address(uow, wallet, label="after key rotation", actor=ACTOR)
    voided = _void_unbroadcast(uow, wallet)
    row.status, row.to_epoch, row.rotated_at = "rotated", new_epoch, ctx.now
    row.new_xpub = seed.account_xpub
    uow.audit(
        ctx.actor,
        "key_rotation.applied",
        "key_rotation",
        row.id,
        {
            "wallet": wallet.name,
            "from_epoch": row.from_epoch,
            "to_epoch": new_epoch,
            "xpub": seed.account_xpub,  # public: lets anyone verify the new addresses
            "master_fingerprint": seed.master_fingerprint,
            "addresses_retired": retired,
            "current_address": address.address,
            "voided_txids": voided,
            "reason": row.reason,
            "requested_by": row.requested_by,
            "approved_by": approved_by,
        },
    )


def _void_unbroadcast(uow: UnitOfWork, wallet: Wallet) -> list[str]:
    """Void the wallet's payout transactions that were signed and never broadcast.

    Replacements (fee bumps) are left alone: their original is on the network, and voiding
    the replacement would not take the original back."""
    rows = list(
        uow.session.scalars(
            select(ChainTransaction).where(
                ChainTransaction.wallet_id == wallet.id,
                ChainTransaction.kind == "payout",
                ChainTransaction.status == "signed",
                ChainTransaction.replaces_id.is_(None),
            )
        )
    )
    for tx in rows:
        tx.status = VOIDED
        uow.audit(
            ACTOR,
            "transaction.voided",
            "chain_transaction",
            tx.id,
            {"txid": tx.txid, "why": "key rotation: re-signed from the new epoch"},
        )
    return [tx.txid for tx in rows]


def _content(session: Session, row: KeyRotation) -> dict[str, Any]:
    return {
        "kind": KIND,
        "rotation_id": row.id,
        "wallet_id": row.wallet_id,
        "from_epoch": row.from_epoch,
        "reason": row.reason,
    }


class KeyRotationApprovals:
    name = KIND

    def content(self, session: Session, subject_id: str) -> dict[str, Any]:
        return _content(session, get_rotation(session, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        row = get_rotation(ctx.uow.session, request.subject_id)
        counted = approvals.require_quorum(ctx.uow.session, ctx.kek, request)
        rotate(ctx, row, list(counted.approvers))

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_rotation(ctx.uow.session, request.subject_id).status = "rejected"

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_rotation(ctx.uow.session, request.subject_id).status = "expired"


# --- After the rotation: sweep old epochs, re-sign held payouts --------------------------------


class RotationService:
    def __init__(self, db: Database, kek: Kek, pipeline: SigningPipeline) -> None:
        self.db = db
        self.kek = kek
        self.pipeline = pipeline
        self.settings: Settings = pipeline.settings

    def run(self, wallet: str | None = None) -> list[str]:
        """Sweep old-epoch coins, broadcast rotation sweeps, re-sign what may be re-signed.
        Returns the txids signed this pass."""
        with self.db.read() as s:
            # Cheap for the common case: no wallet was ever rotated.
            query = select(Wallet.id).where(Wallet.current_epoch > 1)
            if wallet is not None:
                query = query.where(Wallet.name == wallet)
            wallet_ids = list(s.scalars(query))
        signed: list[str] = []
        for wallet_id in wallet_ids:
            for step in (self._sweep_old_epochs, self._resign_held):
                txid = self.pipeline.attempt(wallet_id, step, waiting="rotation step waits")
                if txid is not None:
                    signed.append(txid)
        if wallet_ids:
            self.broadcast_sweeps()
        return signed

    # -- sweeping ----------------------------------------------------------------------

    def _sweep_old_epochs(self, wallet_id: str) -> str | None:
        if not self._has(wallet_id, lambda s, w: bool(_old_epoch_coins(s, w))):
            return None
        with self.db.write() as uow:
            s = uow.session
            wallet = s.get(Wallet, wallet_id)
            assert wallet is not None
            coins = _old_epoch_coins(s, wallet)
            if not coins:
                return None
            return self._sign_sweep(uow, wallet, coins)

    def _sign_sweep(self, uow: UnitOfWork, wallet: Wallet, coins: list[Coin]) -> str:
        tx, row = sign_sweep_to_cold(
            uow,
            self.pipeline,
            self.kek,
            wallet,
            coins,
            keep_sat=None,
            rate=self._fee_rate(),
            trigger=SWEEP_TRIGGER,
            actor=ACTOR,
            take_over_reserved=True,
        )
        log.warning("rotation sweep %s: %d sat of old-epoch coins to cold", tx.txid, row.amount_sat)
        return tx.txid

    def _fee_rate(self) -> int:
        # High priority: the old keys may be in someone else's hands; outbid them.
        return self.pipeline.fee_rate(
            target_blocks=self.settings.rotation_sweep_target_blocks,
            floor=self.settings.rotation_sweep_min_fee_rate,
        )

    def broadcast_sweeps(self) -> list[str]:
        """Broadcast stored rotation sweeps, under the write lock, whatever the freeze."""
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(ChainTransaction.id)
                    .join(Sweep, Sweep.transaction_id == ChainTransaction.id)
                    .where(ChainTransaction.status == "signed", Sweep.trigger == SWEEP_TRIGGER)
                    .order_by(ChainTransaction.created_at)
                )
            )
        return self.pipeline.broadcast(ids, despite_freeze=True)

    # -- re-signing held payouts -------------------------------------------------------

    def _has(self, wallet_id: str, check: Callable[[Session, Wallet], bool]) -> bool:
        """A read first: after a rotation every pass looks, and most find nothing to do, so
        they should not take the global write lock."""
        with self.db.read() as s:
            wallet = s.get(Wallet, wallet_id)
            return wallet is not None and check(s, wallet)

    def _resign_held(self, wallet_id: str) -> str | None:
        if not self._has(wallet_id, lambda s, w: _dead_voided(s, w) is not None):
            return None
        with self.db.write() as uow:
            s = uow.session
            wallet = s.get(Wallet, wallet_id)
            assert wallet is not None
            if withdrawals_freeze(s, wallet.id) is not None:
                return None
            voided = _dead_voided(s, wallet)
            if voided is None:
                return None
            held = list(
                s.scalars(
                    select(Withdrawal)
                    .where(
                        Withdrawal.transaction_id == voided.id,
                        Withdrawal.status == WithdrawalStatus.SIGNED.value,
                    )
                    .order_by(Withdrawal.created_at, Withdrawal.id)
                )
            )
            for w in held:
                if not (
                    w.authorization_mac
                    and self.kek.verify_mac(ROW_MAC, authorization_message(w), w.authorization_mac)
                ):
                    raise Conflict(f"withdrawal {w.id} fails its integrity check; not re-signing")
            return self._resign(uow, wallet, voided, held)

    def _resign(
        self, uow: UnitOfWork, wallet: Wallet, voided: ChainTransaction, held: list[Withdrawal]
    ) -> str:
        tx, plan = sign_payout_batch(uow, self.pipeline, wallet, held, replaces_id=voided.id)
        uow.audit(
            ACTOR,
            "transaction.resigned",
            "chain_transaction",
            tx.id,
            {
                "txid": tx.txid,
                "replaces_voided_txid": voided.txid,
                "withdrawals": [w.id for w in held],
                "inputs": [f"{c.txid}:{c.vout}" for c in plan.inputs],
                "epoch": wallet.current_epoch,
            },
        )
        return tx.txid


def _old_epoch_coins(s: Session, wallet: Wallet) -> list[Coin]:
    """Unspent coins of retired epochs: free ones and those held by voided transactions."""
    voided_ids = select(ChainTransaction.id).where(
        ChainTransaction.wallet_id == wallet.id, ChainTransaction.status == VOIDED
    )
    rows = s.execute(
        coins_query().where(
            Utxo.wallet_id == wallet.id,
            Address.epoch < wallet.current_epoch,
            Utxo.spent_by_txid.is_(None),
            Utxo.block_height.is_not(None),
            or_(Utxo.reserved_by.is_(None), Utxo.reserved_by.in_(voided_ids)),
        )
    ).all()
    coins = to_coins(s, rows)
    # Only what plan_sweep will actually take (mature, confirmed): otherwise every pass
    # would sign an empty plan for an immature coinbase and log it.
    return [c for c in coins if c.confirmations >= _needed_confirmations(c)]


def _needed_confirmations(coin: Coin) -> int:
    return 100 if coin.is_coinbase else 1


def _dead_voided(s: Session, wallet: Wallet) -> ChainTransaction | None:
    """A voided transaction with held payouts whose inputs are all spent on chain by others."""
    for tx in s.scalars(
        select(ChainTransaction)
        .where(ChainTransaction.wallet_id == wallet.id, ChainTransaction.status == VOIDED)
        .order_by(ChainTransaction.created_at)
    ):
        has_held = s.scalar(
            select(Withdrawal.id).where(
                Withdrawal.transaction_id == tx.id,
                Withdrawal.status == WithdrawalStatus.SIGNED.value,
            )
        )
        if has_held is not None and _inputs_spent_elsewhere(s, tx):
            return tx
    return None


def _inputs_spent_elsewhere(s: Session, tx: ChainTransaction) -> bool:
    decoded = CTransaction.deserialize(bytes.fromhex(tx.raw_tx))
    for txin in decoded.vin:
        coin = s.scalar(
            select(Utxo).where(Utxo.txid == b2lx(txin.prevout.hash), Utxo.vout == txin.prevout.n)
        )
        if coin is None or coin.spent_height is None or coin.spent_by_txid == tx.txid:
            return False
    return True


# --- Views -----------------------------------------------------------------------------------


def rotation_view(session: Session, row: KeyRotation) -> dict[str, Any]:
    wallet = session.get(Wallet, row.wallet_id)
    return {
        "id": row.id,
        "wallet": wallet.name if wallet else None,
        "status": row.status,
        "reason": row.reason,
        "from_epoch": row.from_epoch,
        "to_epoch": row.to_epoch,
        "new_xpub": row.new_xpub,
        "requested_by": row.requested_by,
        "approval_request_id": row.approval_request_id,
        "created_at": row.created_at.isoformat(),
        "rotated_at": row.rotated_at.isoformat() if row.rotated_at else None,
    }


def rotation_status(session: Session, wallet: Wallet) -> dict[str, Any]:
    """What an operator checks after a rotation: epochs, current address, what is left."""
    old = _old_epoch_coins(session, wallet)
    sweeps = session.execute(
        select(Sweep, ChainTransaction)
        .join(ChainTransaction, ChainTransaction.id == Sweep.transaction_id)
        .where(Sweep.wallet_id == wallet.id, Sweep.trigger == SWEEP_TRIGGER)
        .order_by(Sweep.created_at)
    ).all()
    held = session.scalar(
        select(Withdrawal.id)
        .join(ChainTransaction, ChainTransaction.id == Withdrawal.transaction_id)
        .where(Withdrawal.wallet_id == wallet.id, ChainTransaction.status == VOIDED)
        .where(Withdrawal.status == WithdrawalStatus.SIGNED.value)
        .limit(1)
    )
    try:
        current = current_address(session, wallet).address
    except NotFound:
        current = None
    rotations = session.scalars(
        select(KeyRotation)
        .where(KeyRotation.wallet_id == wallet.id)
        .order_by(KeyRotation.created_at.desc())
        .limit(5)
    )
    return {
        "wallet": wallet.name,
        "current_epoch": wallet.current_epoch,
        "current_address": current,
        "old_epoch_coins_left": len(old),
        "old_epoch_sat_left": sum(c.amount_sat for c in old),
        "payouts_waiting_to_be_resigned": held is not None,
        "rotation_sweeps": [
            {"txid": tx.txid, "status": tx.status, "amount_sat": sw.amount_sat, "to": sw.address}
            for sw, tx in sweeps
        ],
        "rotations": [rotation_view(session, r) for r in rotations],
    }
