"""The theft shield: a stolen key caught spending in the mempool, answered with a replacement
that sends the same coins to cold storage.

Since Bitcoin Core 28 every unconfirmed transaction is replaceable (full RBF). A thief who
decrypted a hot seed and spent our coins must still wait for a block; until then whoever holds
the key can spend the same coins again at a higher fee, and miners take the better offer. The
mempool watcher (walletsvc.chainsync.mempool) reports a spend of our coins that we never
signed; ``Shield.on_theft`` then, in this order:

1. **freezes everything** (scope ``all``, every wallet, source ``shield``) through the
   incident freeze function, so every payout, sweep and re-sign stops: the shield's answer is
   the one spend a freeze allows, because it pays only the MAC-checked cold destination;
2. **answers**: signs, through the one ``SigningPipeline``, a transaction (kind ``shield``)
   spending the stolen coins, and the other free coins of the same key epochs while the fee
   budget allows, to the next cold address, at the lowest rate that replaces the thief's
   transaction under Core's rules (``outbid_rate``: BIP125 rules 3, 4 and 6); stores it and
   broadcasts it at once, despite the freeze and above the usual fee-rate guard;
3. **alerts**: a critical log line, the ``walletsvc_thefts_detected_total`` and
   ``walletsvc_shield_rounds_total`` metrics, a ``shield.*`` audit event per round, and
   ``alert_hooks`` (callables given a ``TheftAlert``, where a webhook can subscribe).

If the thief replaces our answer, the watcher reports the new transaction and the shield
answers again (a new round), until the next answer would cost more than the policy's budget
(``shield.max_fee_percent`` of the stolen value, or everything but a dust output with
``shield.everything_to_fees``): then it stops and says so. Each thief transaction is
answered at most once (``shield_rounds.thief_txid`` is unique), so repeated notifications
are harmless.

Outcome: the scanner calls ``on_block`` inside each block's transaction. Our answer mined is
``saved`` (what reached cold, the fee it cost); a thief's transaction mined is ``lost``, with
the thief's txid, its block and raw transaction as evidence. The freeze stays either way:
lifting it is the governed unfreeze.

Limits (docs/threat-model.md): a thief who mines privately, or who pays more than our budget,
wins; so does one whose transaction is mined before we see it. Coins our own payouts had
already reserved are taken over by the answer, and those payouts stay held until an operator
cancels them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import Counter

from walletsvc.chainsync.mempool import ForeignSpend, StolenCoin
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import ChainTransaction, Utxo, Wallet, utcnow
from walletsvc.db.models_incident import ShieldIncident, ShieldRound
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.coinselect import is_immature_coinbase
from walletsvc.domain.errors import (
    ChainRejected,
    Conflict,
    DependencyUnavailable,
    DomainError,
    FeeTooHigh,
    InsufficientFunds,
)
from walletsvc.domain.ports import MempoolEntry
from walletsvc.domain.sizes import estimate_vsize
from walletsvc.domain.transaction import Coin, KeyPath
from walletsvc.domain.txplan import outbid_rate, plan_sweep
from walletsvc.governance.policies import active_policy
from walletsvc.incident.freeze import freeze
from walletsvc.keys.integrity import RowTagger
from walletsvc.payouts.signing import SigningPipeline, tip_height, to_coins
from walletsvc.policy.document import Shield as ShieldPolicy
from walletsvc.treasury.cold import NoColdDestination, active_cold_destination
from walletsvc.treasury.sweeps import sign_sweep_to_cold
from walletsvc.wallets.service import get_wallet

log = logging.getLogger(__name__)
ACTOR = "system:shield"
KIND = "shield"
RACING, SAVED, LOST = "racing", "saved", "lost"
ANSWERED, CAP_REACHED, FAILED = "answered", "cap_reached", "failed"
OUTBID = "outbid"  # our answer, replaced in the mempool by the thief's next transaction
DEAD = "dead"  # our answer, after the thief's transaction was mined
IN_FLIGHT = ("signed", "broadcast")

THEFTS = Counter(
    "walletsvc_thefts_detected_total",
    "Mempool transactions spending our coins that we did not sign",
    ["wallet"],
)
ROUNDS = Counter(
    "walletsvc_shield_rounds_total", "Theft-shield rounds, by outcome", ["wallet", "outcome"]
)


@dataclass(frozen=True)
class TheftAlert:
    """What the alert hooks receive after each round (no key material, no raw bytes)."""

    wallet: str
    incident_id: str
    round: int
    thief_txid: str
    stolen_sat: int
    outcome: str  # answered | cap_reached | failed
    answer_txid: str | None
    answer_fee_sat: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


AlertHook = Callable[[TheftAlert], None]


@dataclass(frozen=True)
class _Answer:
    incident_id: str
    round: ShieldRound
    transaction_id: str | None


def fee_budget(policy: ShieldPolicy | None, stolen_sat: int) -> int:
    """The most the shield's answers may pay in fees for coins worth ``stolen_sat``."""
    return (policy or ShieldPolicy()).fee_budget(stolen_sat)


class Shield:
    def __init__(
        self,
        db: Database,
        tags: RowTagger,
        pipeline: SigningPipeline,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.tags = tags
        self.pipeline = pipeline
        self.clock = clock
        self.alert_hooks: list[AlertHook] = []

    # -- the watcher's hook --------------------------------------------------------------

    def on_theft(self, spend: ForeignSpend) -> list[str]:
        """Freeze, answer and alert for one foreign spend; the txids of our answers."""
        answered = []
        for wallet_id in spend.wallet_ids:
            coins = [c for c in spend.coins if c.wallet_id == wallet_id]
            answer = self._round(wallet_id, spend, coins)
            if answer is None:
                continue  # this thief transaction was answered before
            if answer.transaction_id is not None:
                sent = self.pipeline.broadcast(
                    [answer.transaction_id], despite_freeze=True, own_fee_rate_guard=True
                )
                answered.extend(sent)
            self._alert(wallet_id, answer)
        return answered

    def _round(
        self, wallet_id: str, spend: ForeignSpend, coins: list[StolenCoin]
    ) -> _Answer | None:
        with self.db.read() as uow:
            if uow.shield_rounds.by_thief_txid(spend.entry.txid) is not None:
                return None
            first = _incident_for(uow, wallet_id, coins) is None
        if first:
            self._freeze(wallet_id, spend, coins)
        try:
            with self.db.write() as uow:
                return self._answer(uow, wallet_id, spend, coins)
        except DomainError as exc:
            # Nothing was signed; the round is still recorded (and alerted) as failed.
            log.error("theft shield could not answer %s: %s", spend.entry.txid, exc.message)
            self.pipeline.report_failure(wallet_id, exc)
            with self.db.write() as uow:
                return self._record_failed(uow, wallet_id, spend, coins, exc.message)

    def _freeze(self, wallet_id: str, spend: ForeignSpend, coins: list[StolenCoin]) -> None:
        """Everything, every wallet: the key behind one of our coins is in other hands."""
        freeze(
            self.db,
            scope="all",
            wallet=None,
            reason=f"theft shield: mempool transaction {spend.entry.txid} spends our coins "
            "and was not signed by us",
            actor=ACTOR,
            source="shield",
            # The signer too, at once: it then signs only transactions to cold (the answer).
            signer=self.pipeline.signer,
            evidence={
                "thief_txid": spend.entry.txid,
                "stolen": [f"{c.txid}:{c.vout}" for c in coins],
                "stolen_sat": sum(c.amount_sat for c in coins),
                "thief_fee_sat": spend.entry.fee_sat,
                "thief_vsize": spend.entry.vsize,
            },
        )

    # -- one answer ----------------------------------------------------------------------

    def _answer(
        self, uow: UnitOfWork, wallet_id: str, spend: ForeignSpend, coins: list[StolenCoin]
    ) -> _Answer:
        wallet = uow.wallets.get(wallet_id)
        assert wallet is not None
        incident = self._open_incident(uow, wallet, spend, coins)
        entry = spend.entry
        stolen = _stolen_coins(uow, incident)
        extras = _free_coins_of_epochs(uow, wallet, stolen)
        try:
            chosen, rate = self._outbid(uow, wallet, stolen, extras, entry, incident.max_fee_sat)
        except FeeTooHigh as exc:
            incident.cap_reached = True
            return self._record(uow, wallet, incident, spend, CAP_REACHED, exc.message)
        tx, sweep = sign_sweep_to_cold(
            uow,
            self.pipeline,
            self.tags,
            wallet,
            chosen,
            keep_sat=None,
            rate=rate,
            trigger=KIND,
            actor=ACTOR,
            take_over_reserved=True,
            kind=KIND,
            max_fee_sat=incident.max_fee_sat,
            min_confirmations=1,
            audit_extra={"shield_incident": incident.id, "thief_txid": entry.txid},
        )
        detail = (
            f"{sweep.amount_sat} sat to cold address #{sweep.cold_index} at {rate} sat/vB "
            f"(fee {tx.fee_sat} sat) against the thief's {entry.fee_sat} sat / {entry.vsize} vB"
        )
        return self._record(uow, wallet, incident, spend, ANSWERED, detail, tx)

    def _outbid(
        self,
        uow: ReadUnitOfWork,
        wallet: Wallet,
        stolen: list[Coin],
        extras: list[Coin],
        entry: MempoolEntry,
        budget: int,
    ) -> tuple[list[Coin], int]:
        """The coins and the rate of the answer: the stolen coins and, if the budget allows,
        the epoch's other free coins; FeeTooHigh when even the stolen coins alone do not fit.

        Planned here without side effects (the cold address is only peeked at), so a plan
        that does not fit reserves no cold address and no change address.
        """
        found = active_cold_destination(uow, self.tags, wallet)
        if found is None:
            raise NoColdDestination(f"wallet {wallet.name!r} has no cold destination")
        if not any(c.confirmations >= 1 and not is_immature_coinbase(c) for c in stolen):
            # Our own unconfirmed change, say: a replacement would need its parent too.
            raise Conflict(
                "the stolen coins are unconfirmed or immature: no answer can spend them",
                field="stolen",
            )
        row, parsed = found
        cold_script = parsed.script_pubkey(row.next_index)
        floor = self._floor_rate()
        stolen_outpoints = {c.outpoint for c in stolen}
        last: FeeTooHigh | None = None
        for candidates in ([*stolen, *extras], stolen) if extras else (stolen,):
            try:
                plan_coins, rate = _fit(
                    candidates, cold_script, entry, floor, budget, uow_tip=tip_height(uow)
                )
            except (FeeTooHigh, InsufficientFunds) as exc:
                # Over the budget, or the coins cannot even pay it: the thief outbids us.
                last = FeeTooHigh(exc.message, field="max_fee_sat")
                continue
            if stolen_outpoints & {c.outpoint for c in plan_coins}:
                return plan_coins, rate
        raise last or FeeTooHigh("no plan kept a stolen coin", field="max_fee_sat")

    def _floor_rate(self) -> int:
        """At least the rotation sweep's high-priority rate: the answer must also confirm."""
        settings = self.pipeline.settings
        try:
            return self.pipeline.fee_rate(
                target_blocks=settings.rotation_sweep_target_blocks,
                floor=settings.rotation_sweep_min_fee_rate,
            )
        except DependencyUnavailable:
            return settings.rotation_sweep_min_fee_rate

    def _open_incident(
        self, uow: UnitOfWork, wallet: Wallet, spend: ForeignSpend, coins: list[StolenCoin]
    ) -> ShieldIncident:
        incident = _incident_for(uow, wallet.id, coins)
        if incident is None:
            stolen_sat = sum(c.amount_sat for c in coins)
            policy = self._budget_policy(uow, wallet)
            incident = ShieldIncident(
                wallet_id=wallet.id,
                status=RACING,
                first_theft_txid=spend.entry.txid,
                stolen=[f"{c.txid}:{c.vout}" for c in coins],
                stolen_sat=stolen_sat,
                max_fee_sat=fee_budget(policy, stolen_sat),
                freeze_id=_shield_freeze_id(uow, spend.entry.txid),
                evidence={},
            )
            uow.shield_incidents.add(incident, flush=True)
            THEFTS.labels(wallet=wallet.name).inc()
            uow.audit(
                ACTOR,
                "shield.theft_detected",
                "shield_incident",
                incident.id,
                {
                    "wallet": wallet.name,
                    "thief_txid": spend.entry.txid,
                    "stolen": incident.stolen,
                    "stolen_sat": stolen_sat,
                    "max_fee_sat": incident.max_fee_sat,
                    "freeze_id": incident.freeze_id,
                },
            )
        else:
            known = set(incident.stolen)
            more = [c for c in coins if f"{c.txid}:{c.vout}" not in known]
            if more:  # the thief's new transaction takes more of our coins
                incident.stolen = [*incident.stolen, *(f"{c.txid}:{c.vout}" for c in more)]
                incident.stolen_sat += sum(c.amount_sat for c in more)
                policy = self._budget_policy(uow, wallet)
                incident.max_fee_sat = fee_budget(policy, incident.stolen_sat)
        return incident

    def _budget_policy(self, uow: ReadUnitOfWork, wallet: Wallet) -> ShieldPolicy | None:
        """The policy's ``shield`` section; its defaults if the policy cannot be read (its
        tag fails, say): a theft in progress is no time to fail closed."""
        try:
            return active_policy(uow, self.tags, wallet).document.shield
        except DomainError as exc:
            log.error("theft shield: the active policy is unusable (%s); default budget", exc)
            return None

    def _record(
        self,
        uow: UnitOfWork,
        wallet: Wallet,
        incident: ShieldIncident,
        spend: ForeignSpend,
        outcome: str,
        detail: str,
        tx: ChainTransaction | None = None,
    ) -> _Answer:
        entry = spend.entry
        # A new thief transaction means the last answer was replaced in the mempool, whatever
        # this round does: it is not re-broadcast any more.
        for old in _answers_in_flight(uow, incident):
            if tx is None or old.id != tx.id:
                old.status = OUTBID
        incident.rounds += 1
        row = ShieldRound(
            incident_id=incident.id,
            number=incident.rounds,
            thief_txid=entry.txid,
            thief_raw_tx=entry.raw.hex(),
            thief_fee_sat=entry.fee_sat,
            thief_vsize=entry.vsize,
            evicted_fees_sat=entry.descendant_fees_sat,
            outcome=outcome,
            answer_transaction_id=tx.id if tx else None,
            answer_txid=tx.txid if tx else None,
            answer_fee_sat=tx.fee_sat if tx else None,
            answer_rate=tx.fee_rate_sat_per_vb if tx else None,
            detail=detail,
            answered_in_ms=round((self.clock() - spend.seen_at) * 1000),
        )
        uow.shield_rounds.add(row, flush=True)
        ROUNDS.labels(wallet=wallet.name, outcome=outcome).inc()
        uow.audit(
            ACTOR,
            f"shield.{outcome}",
            "shield_incident",
            incident.id,
            {
                "wallet": wallet.name,
                "round": row.number,
                "thief_txid": entry.txid,
                "thief_fee_sat": entry.fee_sat,
                "thief_vsize": entry.vsize,
                "evicted_fees_sat": entry.descendant_fees_sat,
                "answer_txid": row.answer_txid,
                "answer_fee_sat": row.answer_fee_sat,
                "answer_rate": row.answer_rate,
                "max_fee_sat": incident.max_fee_sat,
                "detail": detail,
            },
        )
        log.critical("theft shield, round %d against %s: %s", row.number, entry.txid, detail)
        return _Answer(incident.id, row, tx.id if tx else None)

    def _record_failed(
        self,
        uow: UnitOfWork,
        wallet_id: str,
        spend: ForeignSpend,
        coins: list[StolenCoin],
        message: str,
    ) -> _Answer | None:
        if uow.shield_rounds.by_thief_txid(spend.entry.txid) is not None:
            return None
        wallet = uow.wallets.get(wallet_id)
        assert wallet is not None
        incident = self._open_incident(uow, wallet, spend, coins)
        return self._record(uow, wallet, incident, spend, FAILED, message)

    def _alert(self, wallet_id: str, answer: _Answer) -> None:
        with self.db.read() as uow:
            wallet = uow.wallets.get(wallet_id)
            incident = uow.shield_incidents.get(answer.incident_id)
            assert wallet is not None and incident is not None
            alert = TheftAlert(
                wallet=wallet.name,
                incident_id=incident.id,
                round=answer.round.number,
                thief_txid=answer.round.thief_txid,
                stolen_sat=incident.stolen_sat,
                outcome=answer.round.outcome,
                answer_txid=answer.round.answer_txid,
                answer_fee_sat=answer.round.answer_fee_sat,
                detail=answer.round.detail,
            )
        for hook in self.alert_hooks:  # after the commit: the round is on record first
            try:
                hook(alert)
            except Exception:  # a broken hook must not stop the next round
                log.exception("theft alert hook failed")

    # -- every background pass -----------------------------------------------------------

    def rebroadcast(self) -> list[str]:
        """Send our current answers: a stored one not sent yet (a failed send, an answer
        revived by a reorganisation), and again one sent before (a node restart or a lost
        mempool; the node answers a transaction it has with its txid)."""
        with self.db.read() as uow:
            answers = [
                (tx.id, tx.status, tx.txid, tx.raw_tx, -(-tx.fee_sat // tx.vsize))
                for incident in uow.shield_incidents.racing()
                for tx in _answers_in_flight(uow, incident)
            ]
        unsent = [tx_id for tx_id, status, *_ in answers if status == "signed"]
        sent = self.pipeline.broadcast(unsent, despite_freeze=True, own_fee_rate_guard=True)
        for _, status, txid, raw, rate in answers:
            if status != "broadcast":
                continue
            try:
                self.pipeline.chain.broadcast(bytes.fromhex(raw), max_fee_rate_sat_per_vb=rate)
            except (ChainRejected, DependencyUnavailable) as exc:
                log.warning("theft shield: re-sending %s failed: %s", txid, exc.message)
                continue
            sent.append(txid)
        return sent

    # -- the scanner's hook: how each race ended -----------------------------------------

    def on_block(
        self,
        uow: UnitOfWork,
        height: int,
        foreign: list[tuple[str, Utxo]],
        own_txids: list[str],
    ) -> None:
        """Inside the block's transaction: a racing incident whose coins this block spends
        is saved (our answer is in it) or lost (another transaction is)."""
        racing = uow.shield_incidents.racing()
        if not racing:
            return
        foreign_by_outpoint = {f"{coin.txid}:{coin.vout}": txid for txid, coin in foreign}
        own = set(own_txids)
        for incident in racing:
            answers = _answers_of(uow, incident)
            mined = next((tx for tx in answers if tx.txid in own), None)
            if mined is not None:
                _saved(uow, incident, mined, answers, height)
                continue
            thief_txid = next(
                (foreign_by_outpoint[o] for o in incident.stolen if o in foreign_by_outpoint),
                None,
            )
            if thief_txid is not None:
                _lost(uow, incident, thief_txid, answers, height)

    def on_rollback(self, uow: UnitOfWork, fork_height: int) -> None:
        """Inside a reorganisation's transaction: an incident settled by a block that left the
        chain is racing again. Our answer that was mined is ``broadcast`` again (the scanner
        did that), and our last answer after a lost race may win now: it is sent again."""
        for incident in uow.shield_incidents.resolved_above(fork_height):
            was = incident.status
            incident.status = RACING
            incident.saved_sat = incident.lost_sat = incident.fees_spent_sat = 0
            incident.resolved_txid = incident.resolved_height = incident.resolved_at = None
            answers = _answers_of(uow, incident)
            if answers and answers[-1].status == DEAD:
                answers[-1].status = "signed"  # stored, to be sent: the next pass sends it
            for tx in answers[:-1]:
                if tx.status == DEAD:
                    tx.status = OUTBID
            uow.audit(
                ACTOR,
                "shield.reopened",
                "shield_incident",
                incident.id,
                {"was": was, "fork_height": fork_height, "evidence": dict(incident.evidence)},
            )
            incident.evidence = {}
            log.critical(
                "theft shield: incident %s (%s) reopened by a reorganisation", incident.id, was
            )


# --- incidents ---------------------------------------------------------------------------


def _incident_for(
    uow: ReadUnitOfWork, wallet_id: str, coins: Sequence[StolenCoin]
) -> ShieldIncident | None:
    """The racing incident about any of these coins (a thief's next round), if any."""
    wanted = {f"{c.txid}:{c.vout}" for c in coins}
    for incident in uow.shield_incidents.racing(wallet_id):
        if wanted & set(incident.stolen):
            return incident
    return None


def _shield_freeze_id(uow: ReadUnitOfWork, thief_txid: str) -> str | None:
    for row in uow.freezes.active():
        if row.source == "shield" and row.evidence.get("thief_txid") == thief_txid:
            return row.id
    return None


def _stolen_coins(uow: ReadUnitOfWork, incident: ShieldIncident) -> list[Coin]:
    outpoints = [_outpoint(o) for o in incident.stolen]
    return to_coins(uow, uow.utxos.unspent_at_with_addresses(outpoints))


def _free_coins_of_epochs(uow: ReadUnitOfWork, wallet: Wallet, stolen: list[Coin]) -> list[Coin]:
    """The other confirmed, unreserved coins under the compromised epochs' keys."""
    taken = {c.outpoint for c in stolen}
    found: list[Coin] = []
    for epoch in sorted({c.key_path.epoch for c in stolen}):
        rows = uow.utxos.spendable_with_addresses(wallet.id, epoch)
        found += [c for c in to_coins(uow, rows) if c.outpoint not in taken]
    return found


def _answers_of(uow: ReadUnitOfWork, incident: ShieldIncident) -> list[ChainTransaction]:
    ids = [r.answer_transaction_id for r in uow.shield_rounds.of_incident(incident.id)]
    return [tx for tx in (uow.transactions.get(i) for i in ids if i) if tx is not None]


def _answers_in_flight(uow: ReadUnitOfWork, incident: ShieldIncident) -> list[ChainTransaction]:
    return [tx for tx in _answers_of(uow, incident) if tx.status in IN_FLIGHT]


def _saved(
    uow: UnitOfWork,
    incident: ShieldIncident,
    mined: ChainTransaction,
    answers: list[ChainTransaction],
    height: int,
) -> None:
    sweep = uow.sweeps.by_txid(mined.txid)
    incident.status = SAVED
    incident.saved_sat = sweep.amount_sat if sweep is not None else 0
    incident.fees_spent_sat = mined.fee_sat
    _resolve(uow, incident, mined.txid, answers, height)
    log.critical(
        "theft shield: SAVED %d sat to cold in %s (fees %d sat)",
        incident.saved_sat,
        mined.txid,
        mined.fee_sat,
    )


def _lost(
    uow: UnitOfWork,
    incident: ShieldIncident,
    thief_txid: str,
    answers: list[ChainTransaction],
    height: int,
) -> None:
    incident.status = LOST
    incident.lost_sat = incident.stolen_sat
    thief_round = uow.shield_rounds.by_thief_txid(thief_txid)
    incident.evidence = {
        "thief_txid": thief_txid,
        "block_height": height,
        # The raw transaction, if it was one we saw in the mempool (else the chain has it).
        "thief_raw_tx": thief_round.thief_raw_tx if thief_round else None,
        "rounds_answered": sum(1 for tx in answers),
    }
    _resolve(uow, incident, thief_txid, answers, height)
    log.critical(
        "theft shield: LOST %d sat to %s in block %d", incident.lost_sat, thief_txid, height
    )


def _resolve(
    uow: UnitOfWork,
    incident: ShieldIncident,
    txid: str,
    answers: list[ChainTransaction],
    height: int,
) -> None:
    incident.resolved_txid = txid
    incident.resolved_height = height
    incident.resolved_at = utcnow()
    for tx in answers:
        if tx.txid != txid and tx.status in (*IN_FLIGHT, OUTBID):
            tx.status = DEAD  # its coins are spent by the mined transaction
    uow.audit(
        ACTOR,
        f"shield.{incident.status}",
        "shield_incident",
        incident.id,
        shield_view(uow, incident),
    )


def _outpoint(text: str) -> tuple[str, int]:
    txid, vout = text.split(":")
    return txid, int(vout)


def _fit(
    coins: list[Coin],
    cold_script: bytes,
    entry: MempoolEntry,
    floor: int,
    budget: int,
    *,
    uow_tip: int,
) -> tuple[list[Coin], int]:
    """The rate that outbids ``entry`` with these coins (re-planned until the rate and the
    coins it keeps agree: a higher rate can make a small coin uneconomic)."""
    chosen = coins
    for _ in range(4):
        rate = outbid_rate(
            conflict_fee_sat=entry.fee_sat,
            conflict_vsize=entry.vsize,
            evicted_fees_sat=entry.descendant_fees_sat,
            own_vsize=estimate_vsize(len(chosen), [cold_script]),
            floor_rate=floor,
        )
        plan = plan_sweep(
            coins,
            destination_script=cold_script,
            keep_sat=None,
            fee_rate_sat_per_vb=rate,
            max_fee_sat=budget,
            change_script=b"",
            change_path=KeyPath(0, 1, 0),  # unused: no change without keep_sat
            min_confirmations=1,
            locktime=max(uow_tip, 0),
        )
        if len(plan.inputs) == len(chosen):
            return list(plan.inputs), rate
        chosen = list(plan.inputs)
    raise FeeTooHigh("the answer's coins and rate do not settle", field="max_fee_sat")


# --- Views ---------------------------------------------------------------------------------


def shield_view(uow: ReadUnitOfWork, incident: ShieldIncident) -> dict[str, Any]:
    wallet = uow.wallets.get(incident.wallet_id)
    rounds = uow.shield_rounds.of_incident(incident.id)
    return {
        "id": incident.id,
        "wallet": wallet.name if wallet else None,
        "status": incident.status,
        "first_theft_txid": incident.first_theft_txid,
        "stolen": list(incident.stolen),
        "stolen_sat": incident.stolen_sat,
        "max_fee_sat": incident.max_fee_sat,
        "cap_reached": incident.cap_reached,
        "freeze_id": incident.freeze_id,
        "saved_sat": incident.saved_sat,
        "lost_sat": incident.lost_sat,
        "fees_spent_sat": incident.fees_spent_sat,
        "resolved_txid": incident.resolved_txid,
        "resolved_height": incident.resolved_height,
        "evidence": dict(incident.evidence),
        "created_at": incident.created_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "rounds": [
            {
                "number": r.number,
                "thief_txid": r.thief_txid,
                "thief_fee_sat": r.thief_fee_sat,
                "thief_vsize": r.thief_vsize,
                "evicted_fees_sat": r.evicted_fees_sat,
                "outcome": r.outcome,
                "answer_txid": r.answer_txid,
                "answer_fee_sat": r.answer_fee_sat,
                "answer_rate": r.answer_rate,
                "answered_in_ms": r.answered_in_ms,
                "detail": r.detail,
            }
            for r in rounds
        ],
    }


def shield_incidents(
    db: Database, *, wallet: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """``GET /v1/shield/incidents`` and ``walletsvc shield incidents``: newest first."""
    with db.read() as uow:
        wallet_id = get_wallet(uow, wallet).id if wallet is not None else None
        rows = uow.shield_incidents.newest(wallet_id=wallet_id, limit=limit)
        return {"incidents": [shield_view(uow, r) for r in rows]}
