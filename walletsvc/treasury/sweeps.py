"""Sweeps to cold storage and refill alerts, from the active policy's ``hot`` thresholds.

After each scan: if the confirmed hot balance, less what pending payouts need (approved and
pending approval), is above ``ceiling_sat``, one transaction sends everything above
``target_sat`` (plus that need) to the next unused cold address; below ``floor_sat`` a refill
alert says how much to bring back from cold. What pending payouts need is never swept: it stays
behind as the sweep's change output, exact to the satoshi.

A sweep is a ``chain_transactions`` row (kind ``sweep``) with a ``sweeps`` row beside it, signed
and stored in one DB transaction and broadcast only after that commit, like a payout batch.
While a sweep is in flight the wallet's balance is in motion, so no other sweep starts and no
alert is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from bitcoin.core import CTransaction
from prometheus_client import Counter, Gauge

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import ChainTransaction, Wallet, utcnow
from walletsvc.db.models_treasury import HotAlert, Sweep
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import Conflict, DomainError, InsufficientFunds
from walletsvc.domain.transaction import Coin, TransactionPlan
from walletsvc.domain.txplan import plan_sweep
from walletsvc.governance.policies import active_policy
from walletsvc.keys.integrity import RowTagger
from walletsvc.payouts.signing import SigningPipeline, reserve_inputs, spendable_coins, tip_height
from walletsvc.policy.document import HotThresholds
from walletsvc.treasury.cold import cold_view, reserve_cold_address
from walletsvc.treasury.fee_bumps import watch
from walletsvc.wallets.balances import wallet_balances
from walletsvc.wallets.freezes import withdrawals_freeze
from walletsvc.wallets.service import get_wallet, next_change_path

log = logging.getLogger(__name__)
ACTOR = "system:sweeper"
IN_FLIGHT = ("signed", "broadcast")

SWEEPS = Counter("walletsvc_sweeps_total", "Sweeps to cold storage signed", ["wallet", "trigger"])
REFILL_NEEDED = Gauge(
    "walletsvc_hot_refill_needed_sat",
    "Satoshis to bring from cold storage to get the hot wallet back to its target (0: none)",
    ["wallet"],
)
REFILL_ALERTS = Counter("walletsvc_hot_refill_alerts_total", "Refill alerts raised", ["wallet"])


@dataclass(frozen=True)
class HotPosition:
    """A wallet's hot balance as the thresholds see it."""

    confirmed_sat: int  # spendable now
    needed_sat: int  # by payouts pending approval or approved, not yet signed
    incoming_change_sat: int  # change of our own transactions still in flight
    sweep_in_flight: bool

    @property
    def sweepable_sat(self) -> int:
        return self.confirmed_sat - self.needed_sat

    @property
    def available_sat(self) -> int:
        return self.confirmed_sat + self.incoming_change_sat - self.needed_sat


@dataclass(frozen=True)
class RefillAlert:
    wallet: str
    balance_sat: int
    floor_sat: int
    target_sat: int
    refill_sat: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


AlertHook = Callable[[RefillAlert], None]


def webhook_hook(url: str, timeout_s: float = 5.0) -> AlertHook:
    """POST each alert as JSON to ``url`` (best effort: a failure is logged, never raised)."""

    def post(alert: RefillAlert) -> None:
        try:
            httpx.post(
                url, json={"event": "hot.refill_alert", **alert.as_dict()}, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            log.error("refill webhook failed: %s", type(exc).__name__)

    return post


class SweepService:
    def __init__(
        self,
        db: Database,
        tags: RowTagger,
        pipeline: SigningPipeline,
        *,
        alert_hooks: list[AlertHook] | None = None,
    ) -> None:
        self.db = db
        self.tags = tags
        self.pipeline = pipeline
        self.settings: Settings = pipeline.settings
        self.alert_hooks: list[AlertHook] = list(alert_hooks or [])
        if self.settings.refill_webhook_url:
            self.alert_hooks.append(webhook_hook(self.settings.refill_webhook_url))

    # -- after each scan -----------------------------------------------------------------

    def after_scan(self) -> list[str]:
        """Sweep or alert for every wallet with thresholds; returns the sweep txids signed."""
        with self.db.read() as uow:
            wallet_ids = [w.id for w in uow.wallets.all_by_name()]
        txids = []
        for wallet_id in wallet_ids:
            txid = self.pipeline.attempt(wallet_id, self._evaluate, waiting="no sweep this pass")
            if txid is not None:
                txids.append(txid)
        return txids

    def _evaluate(self, wallet_id: str) -> str | None:
        with self.db.read() as uow:
            wallet = uow.wallets.get(wallet_id)
            assert wallet is not None
            hot = _thresholds(uow, self.tags, wallet)
            # Thresholds apply to wallets with cold storage: without one, nothing can be swept
            # and there is nowhere to refill from.
            if hot is None or cold_view(uow, wallet) is None:
                return None
            position = hot_position(uow, wallet, min_confirmations=self.settings.min_confirmations)
        if position.sweep_in_flight:
            return None
        self._check_floor(wallet_id, hot, position)
        if position.sweepable_sat > hot.ceiling_sat:
            return self.sweep(wallet_id, trigger="ceiling", actor=ACTOR)
        return None

    # -- one sweep -----------------------------------------------------------------------

    def force(self, wallet: str, *, actor: str) -> Sweep:
        """An operator's sweep down to the target, whatever the ceiling says."""
        with self.db.read() as uow:
            wallet_id = get_wallet(uow, wallet).id
        txid = self.sweep(wallet_id, trigger="forced", actor=actor, raise_errors=True)
        with self.db.read() as uow:
            row = uow.sweeps.by_txid(txid) if txid is not None else None
            assert row is not None
            return row

    def sweep(
        self, wallet_id: str, *, trigger: str, actor: str, raise_errors: bool = False
    ) -> str | None:
        """Sign and store one sweep down to the target; returns its txid (broadcast later)."""
        try:
            with self.db.write() as uow:
                return self._sign_sweep(uow, wallet_id, trigger=trigger, actor=actor)
        except DomainError as exc:
            if raise_errors:
                raise
            log.warning("sweep of wallet %s failed", wallet_id, exc_info=True)
            self.pipeline.report_failure(wallet_id, exc)  # a swapped cold destination freezes
            return None

    def _sign_sweep(self, uow: UnitOfWork, wallet_id: str, *, trigger: str, actor: str) -> str:
        wallet = uow.wallets.get(wallet_id)
        assert wallet is not None
        if withdrawals_freeze(uow, wallet.id) is not None:
            raise Conflict("the wallet is frozen; no sweep until the freeze is lifted")
        hot = _thresholds(uow, self.tags, wallet)
        if hot is None:
            raise Conflict("the active policy has no hot thresholds for this wallet")
        position = hot_position(uow, wallet, min_confirmations=self.settings.min_confirmations)
        if position.sweep_in_flight:
            raise Conflict("a sweep of this wallet is still unconfirmed", field="wallet")
        keep = hot.target_sat + position.needed_sat
        if position.confirmed_sat <= keep:
            raise InsufficientFunds(
                f"nothing to sweep: {position.confirmed_sat} sat confirmed, {keep} sat to keep "
                f"(target {hot.target_sat} + {position.needed_sat} for pending payouts)"
            )
        tx, row = sign_sweep_to_cold(
            uow,
            self.pipeline,
            self.tags,
            wallet,
            spendable_coins(uow, wallet),
            keep_sat=keep,
            rate=self.pipeline.fee_rate(),
            trigger=trigger,
            actor=actor,
            audit_extra={
                "thresholds": hot.model_dump(),
                "needed_by_payouts_sat": position.needed_sat,
            },
        )
        log.info("sweep %s: %d sat to cold address #%d", tx.txid, row.amount_sat, row.cold_index)
        return tx.txid

    # -- refill alerts -------------------------------------------------------------------

    def _check_floor(self, wallet_id: str, hot: HotThresholds, position: HotPosition) -> None:
        alert: RefillAlert | None = None
        with self.db.write() as uow:
            wallet = uow.wallets.get(wallet_id)
            assert wallet is not None
            current = uow.hot_alerts.open_of_wallet(wallet_id, kind="refill")
            balance = position.available_sat
            if balance >= hot.floor_sat:
                REFILL_NEEDED.labels(wallet=wallet.name).set(0)
                if current is not None:
                    current.status, current.cleared_at = "cleared", utcnow()
                    uow.audit(
                        ACTOR,
                        "hot.refill_cleared",
                        "hot_alert",
                        current.id,
                        {
                            "wallet": wallet.name,
                            "balance_sat": balance,
                        },
                    )
                return
            refill = hot.target_sat - balance
            REFILL_NEEDED.labels(wallet=wallet.name).set(refill)
            if current is not None:
                return  # raised already; the gauge keeps the figure current
            alert = RefillAlert(wallet.name, balance, hot.floor_sat, hot.target_sat, refill)
            row = HotAlert(
                wallet_id=wallet.id,
                kind="refill",
                balance_sat=balance,
                floor_sat=hot.floor_sat,
                target_sat=hot.target_sat,
                refill_sat=refill,
                status="open",
            )
            uow.hot_alerts.add(row, flush=True)
            uow.audit(ACTOR, "hot.refill_alert", "hot_alert", row.id, alert.as_dict())
        REFILL_ALERTS.labels(wallet=alert.wallet).inc()
        log.warning(
            "wallet %s: hot balance %d sat is below the floor of %d sat; bring %d sat from cold",
            alert.wallet,
            alert.balance_sat,
            alert.floor_sat,
            alert.refill_sat,
        )
        for hook in self.alert_hooks:  # after the commit: an alert is on record first
            try:
                hook(alert)
            except Exception:  # a broken hook must not stop the worker
                log.exception("refill alert hook failed")


def sign_sweep_to_cold(
    uow: UnitOfWork,
    pipeline: SigningPipeline,
    tags: RowTagger,
    wallet: Wallet,
    coins: list[Coin],
    *,
    keep_sat: int | None,
    rate: int,
    trigger: str,
    actor: str,
    take_over_reserved: bool = False,
    audit_extra: dict[str, Any] | None = None,
    kind: str = "sweep",
    max_fee_sat: int | None = None,
    min_confirmations: int | None = None,
) -> tuple[ChainTransaction, Sweep]:
    """Sign and store one sweep of ``coins`` to the next cold address, keeping ``keep_sat``.

    ``take_over_reserved``: the coins may still be reserved by transactions that were voided
    (never broadcast) by a key rotation, or outbid in the theft shield's race; the sweep
    takes them over. ``kind``, ``max_fee_sat`` and ``min_confirmations`` let the shield
    store its answer as kind ``shield`` under its own fee budget.
    """
    settings = pipeline.settings
    tip = tip_height(uow)
    cold = reserve_cold_address(uow, tags, wallet)
    change_path, change_script = next_change_path(uow, wallet)
    plan = plan_sweep(
        coins,
        destination_script=cold.script_pubkey,
        keep_sat=keep_sat,
        fee_rate_sat_per_vb=rate,
        max_fee_sat=settings.max_fee_sat if max_fee_sat is None else max_fee_sat,
        change_script=change_script,
        change_path=change_path,
        min_confirmations=(
            settings.min_confirmations if min_confirmations is None else min_confirmations
        ),
        locktime=max(tip, 0),
    )
    tx = pipeline.sign_and_store(
        uow,
        wallet=wallet,
        plan=plan,
        kind=kind,
        rate=rate,
        sweep_scripts=frozenset({cold.script_pubkey}),
        reserve=_take_over_inputs if take_over_reserved else reserve_inputs,
        max_fee_sat=max_fee_sat,
    )
    watch(uow, tx)
    swept = sum(o.amount_sat for o in plan.outputs if o.script_pubkey == cold.script_pubkey)
    row = Sweep(
        wallet_id=wallet.id,
        transaction_id=tx.id,
        cold_destination_id=cold.destination_id,
        cold_index=cold.index,
        address=cold.address,
        script_pubkey=cold.script_pubkey.hex(),
        amount_sat=swept,
        kept_sat=plan.output_total - swept,
        fee_sat=tx.fee_sat,
        trigger=trigger,
        requested_by=actor,
    )
    uow.sweeps.add(row, flush=True)
    SWEEPS.labels(wallet=wallet.name, trigger=trigger).inc()
    uow.audit(
        actor,
        "sweep.signed",
        "sweep",
        row.id,
        {
            **sweep_view(row, tx),
            "fee_rate_sat_per_vb": rate,
            "inputs": [f"{c.txid}:{c.vout}" for c in plan.inputs],
            **(audit_extra or {}),
        },
    )
    return tx, row


def _take_over_inputs(uow: UnitOfWork, plan: TransactionPlan, tx_id: str) -> None:
    """Reserve the plan's coins for ``tx_id`` even if a voided transaction reserved them."""
    for coin in plan.inputs:
        uow.utxos.reassign(coin.txid, coin.vout, reserved_by=tx_id)


def _thresholds(uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet) -> HotThresholds | None:
    return active_policy(uow, tags, wallet).document.hot


def hot_position(uow: ReadUnitOfWork, wallet: Wallet, *, min_confirmations: int) -> HotPosition:
    balances = wallet_balances(uow, wallet, min_confirmations=min_confirmations)
    in_flight = uow.transactions.of_wallet_in_statuses(wallet.id, IN_FLIGHT)
    return HotPosition(
        confirmed_sat=balances.confirmed_sat,
        needed_sat=balances.reserved_sat,
        incoming_change_sat=sum(_our_outputs(uow, wallet, tx) for tx in in_flight),
        sweep_in_flight=any(tx.kind == "sweep" for tx in in_flight),
    )


def _our_outputs(uow: ReadUnitOfWork, wallet: Wallet, tx: ChainTransaction) -> int:
    decoded = CTransaction.deserialize(bytes.fromhex(tx.raw_tx))
    scripts = {bytes(o.scriptPubKey).hex(): int(o.nValue) for o in decoded.vout}
    ours = uow.addresses.scripts_of_wallet_among(wallet.id, list(scripts))
    return sum(scripts[script] for script in ours)


def sweep_view(row: Sweep, tx: ChainTransaction) -> dict[str, Any]:
    return {
        "id": row.id,
        "wallet_id": row.wallet_id,
        "txid": tx.txid,
        "status": tx.status,
        "trigger": row.trigger,
        "address": row.address,
        "cold_index": row.cold_index,
        "amount_sat": row.amount_sat,
        "kept_sat": row.kept_sat,
        "fee_sat": row.fee_sat,
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def list_sweeps(
    uow: ReadUnitOfWork, *, wallet: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    rows = uow.sweeps.newest_with_transactions(wallet_name=wallet, limit=limit)
    return [{**sweep_view(row, tx), "wallet": name} for row, tx, name in rows]


# --- Read use cases --------------------------------------------------------------------------


def sweeps_index(db: Database, *, wallet: str | None, limit: int) -> dict[str, Any]:
    with db.read() as uow:
        if wallet is not None:
            get_wallet(uow, wallet)  # 404 for an unknown wallet, not an empty list
        return {"sweeps": list_sweeps(uow, wallet=wallet, limit=limit)}


def show_sweep(db: Database, row: Sweep, wallet: str) -> dict[str, Any]:
    with db.read() as uow:
        tx = uow.transactions.get(row.transaction_id)
        assert tx is not None
        return {**sweep_view(row, tx), "wallet": wallet}
