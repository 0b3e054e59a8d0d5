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

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import (
    ChainTransaction,
    KeyEpoch,
    Wallet,
    Withdrawal,
)
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.models_risk import KeyRotation
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import withdrawal_authorization_message
from walletsvc.domain.coinselect import COINBASE_MATURITY, is_immature_coinbase
from walletsvc.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    SigningRefused,
)
from walletsvc.domain.ports import SignerPort
from walletsvc.domain.transaction import Coin
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.governance import approvals
from walletsvc.governance.approvals import Approvers, KindContext, Requester
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.governance.signer_gate import SIGNER_REFUSED
from walletsvc.governance.staff import now_utc
from walletsvc.incident.freeze import MAX_REASON_LENGTH
from walletsvc.keys.integrity import RowTagger
from walletsvc.payouts.signing import SigningPipeline, tip_height, to_coins
from walletsvc.payouts.worker import sign_payout_batch
from walletsvc.treasury.sweeps import sign_sweep_to_cold
from walletsvc.wallets.freezes import withdrawals_freeze
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
    tags: RowTagger,
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
        row_wallet = get_wallet(uow, wallet)
        if _pending(uow, row_wallet.id) is not None:
            raise Conflict("a rotation of this wallet is already waiting for approval")
        document = active_policy(uow, tags, row_wallet).document
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
            tags,
            row,
            store=uow.rotations,
            kind=KIND,
            approvers=Approvers.from_policy(document, "key_rotation", moment),
            requester=requester,
            now=moment,
            event="key_rotation.proposed",
            subject_type="key_rotation",
            details=lambda: {"wallet": wallet, "from_epoch": row.from_epoch, "reason": text},
        )
        return row


def _pending(uow: ReadUnitOfWork, wallet_id: str) -> KeyRotation | None:
    return uow.rotations.with_status(wallet_id, PENDING)


def get_rotation(uow: ReadUnitOfWork, rotation_id: str) -> KeyRotation:
    row = uow.rotations.get(rotation_id)
    if row is None:
        raise NotFound("no such key rotation", field="id")
    return row


# --- At quorum -------------------------------------------------------------------------------


def rotate(ctx: KindContext, signer: SignerPort, row: KeyRotation, approved_by: list[str]) -> None:
    """The new epoch, retired addresses, the new current address, voided unbroadcast txs.

    The signer makes and keeps the seed, only for the approved content (it counts the
    quorum itself); refused, the rotation stays pending and the refusal is audited."""
    uow = ctx.uow
    wallet = uow.wallets.get(row.wallet_id)
    assert wallet is not None
    new_epoch = wallet.current_epoch + 1
    try:
        seed = signer.rotate_epoch(_content(uow, row))
    except SigningRefused as exc:
        uow.audit(
            ctx.actor,
            SIGNER_REFUSED,
            "key_rotation",
            row.id,
            {"kind": KIND, "wallet": wallet.name, "reason": exc.message},
        )
        return
    if seed.epoch != new_epoch:
        raise IntegrityFailure(
            f"the signer made key epoch {seed.epoch} of {wallet.name}, the database expects "
            f"{new_epoch}"
        )
    uow.key_epochs.add(
        KeyEpoch(
            wallet_id=wallet.id,
            epoch=new_epoch,
            account_xpub=seed.account_xpub,
            master_fingerprint=seed.master_fingerprint,
        )
    )
    uow.key_epochs.retire_before(wallet.id, new_epoch, ctx.now)
    retired = uow.addresses.retire_before(wallet.id, new_epoch, ctx.now)
    wallet.current_epoch = new_epoch
    uow.wallets.flush()
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
    rows = uow.transactions.unbroadcast_originals(wallet.id, kind="payout")
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


def _content(uow: ReadUnitOfWork, row: KeyRotation) -> dict[str, Any]:
    wallet = uow.wallets.get(row.wallet_id)
    return {
        "kind": KIND,
        "rotation_id": row.id,
        "wallet_id": row.wallet_id,
        "wallet": wallet.name if wallet is not None else None,  # the signer's name for it
        "from_epoch": row.from_epoch,
        "reason": row.reason,
    }


class KeyRotationApprovals:
    """At quorum the signer makes the new epoch's seed; the service gets its xpub."""

    name = KIND

    def __init__(self, signer: SignerPort) -> None:
        self.signer = signer

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return _content(uow, get_rotation(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        row = get_rotation(ctx.uow, request.subject_id)
        counted = approvals.require_quorum(ctx.uow, ctx.tags, request)
        rotate(ctx, self.signer, row, list(counted.approvers))

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_rotation(ctx.uow, request.subject_id).status = "rejected"

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        get_rotation(ctx.uow, request.subject_id).status = "expired"


# --- After the rotation: sweep old epochs, re-sign held payouts --------------------------------


class RotationService:
    def __init__(self, db: Database, tags: RowTagger, pipeline: SigningPipeline) -> None:
        self.db = db
        self.tags = tags
        self.pipeline = pipeline
        self.settings: Settings = pipeline.settings

    def run(self, wallet: str | None = None) -> list[str]:
        """Sweep old-epoch coins, broadcast rotation sweeps, re-sign what may be re-signed.
        Returns the txids signed this pass."""
        with self.db.read() as uow:
            # Cheap for the common case: no wallet was ever rotated.
            wallet_ids = uow.wallets.rotated_ids(name=wallet)
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
        if not self._has(wallet_id, lambda u, w: bool(_old_epoch_coins(u, w))):
            return None
        with self.db.write() as uow:
            wallet = uow.wallets.get(wallet_id)
            assert wallet is not None
            coins = _old_epoch_coins(uow, wallet)
            if not coins:
                return None
            return self._sign_sweep(uow, wallet, coins)

    def _sign_sweep(self, uow: UnitOfWork, wallet: Wallet, coins: list[Coin]) -> str:
        tx, row = sign_sweep_to_cold(
            uow,
            self.pipeline,
            self.tags,
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
        with self.db.read() as uow:
            ids = uow.sweeps.signed_transaction_ids(trigger=SWEEP_TRIGGER)
        return self.pipeline.broadcast(ids, despite_freeze=True)

    # -- re-signing held payouts -------------------------------------------------------

    def _has(self, wallet_id: str, check: Callable[[ReadUnitOfWork, Wallet], bool]) -> bool:
        """A read first: after a rotation every pass looks, and most find nothing to do, so
        they should not take the global write lock."""
        with self.db.read() as uow:
            wallet = uow.wallets.get(wallet_id)
            return wallet is not None and check(uow, wallet)

    def _resign_held(self, wallet_id: str) -> str | None:
        if not self._has(wallet_id, lambda u, w: _dead_voided(u, w) is not None):
            return None
        with self.db.write() as uow:
            wallet = uow.wallets.get(wallet_id)
            assert wallet is not None
            if withdrawals_freeze(uow, wallet.id) is not None:
                return None
            voided = _dead_voided(uow, wallet)
            if voided is None:
                return None
            held = uow.withdrawals.in_transaction(voided.id, [WithdrawalStatus.SIGNED.value])
            for w in held:
                if not (
                    w.authorization_mac
                    and self.tags.verify(withdrawal_authorization_message(w), w.authorization_mac)
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


def _old_epoch_coins(uow: ReadUnitOfWork, wallet: Wallet) -> list[Coin]:
    """Unspent coins of retired epochs that a sweep can take now: free ones and those held by
    voided transactions, confirmed, and mature if coinbase. Anything else would make every
    pass sign an empty plan (plan_sweep skips them) and log it."""
    return [c for c in _unswept_old_epoch_coins(uow, wallet) if _sweepable_now(c)]


def _immature_old_epoch_coins(uow: ReadUnitOfWork, wallet: Wallet) -> list[Coin]:
    """Old-epoch coinbases still short of maturity: the key thief can spend each the moment
    it matures, so the rotation pass at that very height sweeps it (see ``_old_epoch_coins``)."""
    return [c for c in _unswept_old_epoch_coins(uow, wallet) if is_immature_coinbase(c)]


def _unswept_old_epoch_coins(uow: ReadUnitOfWork, wallet: Wallet) -> list[Coin]:
    rows = uow.utxos.retired_epochs_with_addresses(
        wallet.id, wallet.current_epoch, voided_status=VOIDED
    )
    return to_coins(uow, rows)


def _sweepable_now(coin: Coin) -> bool:
    return coin.confirmations >= 1 and not is_immature_coinbase(coin)


def maturity_height(coin: Coin, tip: int) -> int:
    """The chain height at which a coinbase has COINBASE_MATURITY confirmations: a spend of it
    is valid in the next block, so the rotation pass at this height sweeps it to cold and
    the sweep lands in block ``maturity_height + 1``."""
    return tip + COINBASE_MATURITY - coin.confirmations


def _dead_voided(uow: ReadUnitOfWork, wallet: Wallet) -> ChainTransaction | None:
    """A voided transaction with held payouts whose inputs are all spent on chain by others."""
    for tx in uow.transactions.of_wallet_with_status(wallet.id, VOIDED):
        has_held = uow.withdrawals.any_in_transaction(tx.id, WithdrawalStatus.SIGNED.value)
        if has_held and _inputs_spent_elsewhere(uow, tx):
            return tx
    return None


def _inputs_spent_elsewhere(uow: ReadUnitOfWork, tx: ChainTransaction) -> bool:
    decoded = CTransaction.deserialize(bytes.fromhex(tx.raw_tx))
    for txin in decoded.vin:
        coin = uow.utxos.by_outpoint(b2lx(txin.prevout.hash), txin.prevout.n)
        if coin is None or coin.spent_height is None or coin.spent_by_txid == tx.txid:
            return False
    return True


# --- Views -----------------------------------------------------------------------------------


def rotation_view(uow: ReadUnitOfWork, row: KeyRotation) -> dict[str, Any]:
    wallet = uow.wallets.get(row.wallet_id)
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


def old_epochs_left(uow: ReadUnitOfWork, wallet: Wallet) -> dict[str, Any]:
    """What the retired (possibly stolen) keys still hold: the runbook's unfreeze gate.
    Immature coinbases apart, each with the height at which the rotation pass sweeps it."""
    old = _old_epoch_coins(uow, wallet)
    immature = _immature_old_epoch_coins(uow, wallet)
    tip = tip_height(uow)
    return {
        "old_epoch_coins_left": len(old),
        "old_epoch_sat_left": sum(c.amount_sat for c in old),
        "old_epoch_immature_coins_left": len(immature),
        "old_epoch_immature_sat_left": sum(c.amount_sat for c in immature),
        "old_epoch_immature_coins": [
            {
                "txid": c.txid,
                "vout": c.vout,
                "amount_sat": c.amount_sat,
                "matures_at_height": maturity_height(c, tip),
            }
            for c in sorted(immature, key=lambda c: (-c.confirmations, c.txid, c.vout))
        ],
    }


def rotation_status(uow: ReadUnitOfWork, wallet: Wallet) -> dict[str, Any]:
    """What an operator checks after a rotation: epochs, current address, what is left."""
    sweeps = uow.sweeps.of_wallet_by_trigger(wallet.id, SWEEP_TRIGGER)
    held = uow.withdrawals.any_in_transactions_with_status(
        wallet.id, withdrawal_status=WithdrawalStatus.SIGNED.value, transaction_status=VOIDED
    )
    try:
        current = current_address(uow, wallet).address
    except NotFound:
        current = None
    rotations = uow.rotations.newest_of_wallet(wallet.id, limit=5)
    return {
        "wallet": wallet.name,
        "current_epoch": wallet.current_epoch,
        "current_address": current,
        **old_epochs_left(uow, wallet),
        "payouts_waiting_to_be_resigned": held,
        "rotation_sweeps": [
            {"txid": tx.txid, "status": tx.status, "amount_sat": sw.amount_sat, "to": sw.address}
            for sw, tx in sweeps
        ],
        "rotations": [rotation_view(uow, r) for r in rotations],
    }


# --- Read use cases --------------------------------------------------------------------------


def show_rotation(db: Database, tags: RowTagger, rotation_id: str) -> dict[str, Any]:
    """A rotation with its approval request, when it has one."""
    with db.read() as uow:
        row = get_rotation(uow, rotation_id)
        view = rotation_view(uow, row)
        wallet = uow.wallets.get(row.wallet_id)
        if row.status == "rotated" and wallet is not None:
            view.update(old_epochs_left(uow, wallet))
        if row.approval_request_id:
            request = approvals.get_request(uow, row.approval_request_id)
            view["approval"] = approvals.request_view(uow, tags, request)
        return view


def rotations_index(db: Database, wallet: str) -> dict[str, Any]:
    """The wallet's rotation status and every rotation of it, newest first."""
    with db.read() as uow:
        row = get_wallet(uow, wallet)
        status = rotation_status(uow, row)
        rows = uow.rotations.newest_of_wallet(row.id)
        return {**status, "rotations": [rotation_view(uow, r) for r in rows]}
