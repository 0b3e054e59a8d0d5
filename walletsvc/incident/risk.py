"""The risk monitor: feeds the stream rules of walletsvc.policy.risk and acts on findings.

Three feeds:
  * the request stream (every background pass): payout requests and denials from the audit
    log and the withdrawals table, within the longest window the wallet's rules look at;
  * the signer: ``signer_failed`` (the worker's SigningRefused / VerificationFailed) and the
    worker's ``integrity.failure`` audit events;
  * the chain: ``on_block``, called by the scanner inside each block's write transaction with
    our coins spent by transactions that are not ours and our own payments in the block.

A finding is recorded once per (rule, fingerprint) in ``risk_events``. ``action: freeze``
applies a freeze (source ``risk``, the rule and its evidence attached) in the same
transaction; ``action: alert`` is a log line, a metric and a ``risk.alert`` audit event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from bitcoin.core import CTransaction, b2lx
from prometheus_client import Counter

from walletsvc.db.database import AUDIT_HEAD_SUBJECT, INTEGRITY_FAILURE, Database, UnitOfWork
from walletsvc.db.models import (
    AuditEvent,
    Utxo,
    Wallet,
    Withdrawal,
    utcnow,
)
from walletsvc.db.models_risk import RiskEvent
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import DomainError
from walletsvc.domain.ports import SignerPort
from walletsvc.domain.withdrawal import HOLDING_STATUSES
from walletsvc.governance.policies import active_policy
from walletsvc.incident.freeze import SIGNER_SCOPES, apply_freeze, freeze_signer
from walletsvc.keys.integrity import RowTagger
from walletsvc.policy.document import PolicyDocument, RiskRule, parse_duration
from walletsvc.policy.risk import (
    CHAIN_KINDS,
    REQUEST_KINDS,
    SIGNER_KINDS,
    Finding,
    ForeignSpend,
    Payment,
    RequestRecord,
    RequestSnapshot,
    duplicate_payments,
    evaluate_requests,
    foreign_spends,
    signer_failure,
    stream_rules,
    window_of,
)

log = logging.getLogger(__name__)
ACTOR = "system:risk"
PAID_STATUSES = ("signed", "broadcast", "confirmed")
# A stolen key can move deposits too: freeze everything. Other findings stop payouts only.
FREEZE_SCOPE = {"foreign_spend": "all"}

FINDINGS = Counter("walletsvc_risk_findings_total", "Risk rules that fired", ["rule", "action"])


def record(
    uow: UnitOfWork,
    finding: Finding,
    wallet_id: str | None,
    signer: SignerPort | None = None,
) -> RiskEvent | None:
    """Act on ``finding`` inside ``uow`` unless its evidence was reported before. A freeze
    reaches ``signer`` first, as every freeze does (walletsvc.incident.freeze): a database
    writer deleting the row, or this transaction failing, leaves the signer frozen."""
    if uow.risk_events.seen(finding.rule_id, finding.fingerprint):
        return None
    event = RiskEvent(
        rule_id=finding.rule_id,
        kind=finding.kind,
        action=finding.action,
        wallet_id=wallet_id,
        fingerprint=finding.fingerprint,
        evidence=finding.evidence,
    )
    uow.risk_events.add(event, flush=True)
    evidence = {
        "rule": finding.rule_id,
        "kind": finding.kind,
        "summary": finding.summary,
        "risk_event_id": event.id,
        **finding.evidence,
    }
    FINDINGS.labels(rule=finding.rule_id, action=finding.action).inc()
    if finding.action == "freeze":
        scope = FREEZE_SCOPE.get(finding.kind, "withdrawals")
        reason = f"risk rule {finding.rule_id}: {finding.summary}"[:1000]
        if signer is not None and scope in SIGNER_SCOPES:
            freeze_signer(signer, finding.wallet, reason)
        row = apply_freeze(
            uow,
            scope=scope,
            wallet=finding.wallet,
            reason=reason,
            actor=ACTOR,
            source="risk",
            evidence=evidence,
        )
        event.freeze_id = row.id
        log.error("risk rule %s FROZE %s: %s", finding.rule_id, finding.wallet, finding.summary)
    else:
        uow.audit(ACTOR, "risk.alert", "risk_event", event.id, evidence)
        log.warning("risk alert %s (%s): %s", finding.rule_id, finding.wallet, finding.summary)
    return event


def _wallet_id(uow: ReadUnitOfWork, name: str | None) -> str | None:
    if name is None:
        return None
    wallet = uow.wallets.by_name(name)
    return wallet.id if wallet is not None else None


class RiskMonitor:
    def __init__(self, db: Database, tags: RowTagger, signer: SignerPort | None = None) -> None:
        self.db = db
        self.tags = tags
        self.signer = signer  # every automatic freeze reaches it first
        self._integrity_seq = 0  # integrity.failure events up to here were looked at

    # -- each background pass ----------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> list[Finding]:
        """Run the request-stream rules of every wallet and the integrity watch."""
        moment = now or utcnow()
        acted = self._integrity_failures()
        with self.db.read() as uow:
            wallets = uow.wallets.all_by_name()
        for wallet in wallets:
            acted += self._evaluate_wallet(wallet, moment)
        return acted

    def _evaluate_wallet(self, wallet: Wallet, now: datetime) -> list[Finding]:
        with self.db.read() as uow:
            try:
                policy = active_policy(uow, self.tags, wallet).document
            except DomainError:
                return []  # the policy endpoints and the worker report this loudly
            rules = stream_rules(policy, REQUEST_KINDS)
            if not rules:
                return []
            snapshot = request_snapshot(uow, wallet, now - _horizon(rules, policy))
        findings = evaluate_requests(rules, snapshot, policy)
        return self._act(findings)

    def _act(self, findings: Sequence[Finding]) -> list[Finding]:
        if not findings:
            return []
        with self.db.read() as uow:
            known = uow.risk_events.known_among([f.fingerprint for f in findings])
        fresh = [f for f in findings if (f.rule_id, f.fingerprint) not in known]
        if not fresh:
            return []
        acted = []
        with self.db.write() as uow:
            for finding in fresh:
                if record(uow, finding, _wallet_id(uow, finding.wallet), self.signer) is not None:
                    acted.append(finding)
        return acted

    def _integrity_failures(self) -> list[Finding]:
        """The worker's ``integrity.failure`` events: an approved row was altered."""
        with self.db.read() as uow:
            events = uow.audit_events.with_action_after("integrity.failure", self._integrity_seq)
            findings = [self._integrity_finding(uow, ev) for ev in events]
        if events:
            self._integrity_seq = events[-1].seq
        return self._act(findings)

    def _integrity_finding(self, uow: ReadUnitOfWork, ev: AuditEvent) -> Finding:
        withdrawal = uow.withdrawals.get(ev.subject_id) if ev.subject_id else None
        wallet = uow.wallets.get(withdrawal.wallet_id) if withdrawal else None
        rule = _signer_rule(uow, self.tags, wallet)
        return signer_failure(
            rule,
            wallet.name if wallet else None,
            f"audit:{ev.seq}",
            "integrity.failure",
            str(ev.data.get("reason", "")),
        )

    # -- the signer refused its own work -----------------------------------------------

    def signer_failed(self, wallet_id: str, error: DomainError) -> None:
        """Freeze the wallet at once: SigningRefused or VerificationFailed in the worker."""
        with self.db.write() as uow:
            wallet = uow.wallets.get(wallet_id)
            rule = _signer_rule(uow, self.tags, wallet)
            finding = signer_failure(
                rule,
                wallet.name if wallet else None,
                f"{error.code}:{utcnow().isoformat()}",
                error.code,
                error.message[:500],
            )
            record(uow, finding, wallet_id, self.signer)

    def audit_anchor_refused(self, anchored_seq: int | None, error: DomainError) -> None:
        """The signer refused the audit head: the log was cut short or rewritten below the
        head the signer saw (an anchor outside the database, walletsvc.signer). Record it as
        an integrity failure of the audit head and freeze every wallet, once per anchor."""
        with self.db.write() as uow:
            rule = _signer_rule(uow, self.tags, None)
            finding = signer_failure(
                rule, None, f"audit-anchor:{anchored_seq}", error.code, error.message[:500]
            )
            if record(uow, finding, None, self.signer) is None:
                return
            uow.audit(
                ACTOR,
                INTEGRITY_FAILURE,
                AUDIT_HEAD_SUBJECT,
                None,
                {
                    "reason": f"the signer refused the audit head: {error.message[:500]}",
                    "head_seq": anchored_seq,
                },
            )

    # -- the chain watcher (scanner, inside the block's transaction) -------------------

    def on_block(
        self, uow: UnitOfWork, height: int, foreign: Sequence[tuple[str, Utxo]], own: Sequence[str]
    ) -> None:
        """The scanner's hook: ``foreign`` are (spending txid, our coin) pairs whose spender is
        not a transaction of ours; ``own`` are the txids of our transactions in the block."""
        names = {w.id: w for w in uow.wallets.all()}
        spends = [
            ForeignSpend(txid, f"{c.txid}:{c.vout}", c.amount_sat, names[c.wallet_id].name, height)
            for txid, c in foreign
        ]
        payments: list[Payment] = []
        for tx in uow.transactions.with_txids(own):
            payments += payments_of(uow, names[tx.wallet_id], tx.raw_tx, utcnow())
        for wallet in names.values():
            self._watch_wallet(uow, wallet, spends, payments)

    def _watch_wallet(
        self,
        uow: UnitOfWork,
        wallet: Wallet,
        spends: Sequence[ForeignSpend],
        payments: Sequence[Payment],
    ) -> None:
        mine = [p for p in payments if p.wallet == wallet.name]
        stolen = [f for f in spends if f.wallet == wallet.name]
        if not mine and not stolen:
            return
        findings: list[Finding] = []
        for rule in _chain_rules(uow, self.tags, wallet):
            if rule.kind == "foreign_spend" and stolen:
                findings += foreign_spends(rule, stolen)
            elif rule.kind == "duplicate_payment" and mine:
                recent = recent_payments(uow, wallet, mine, window_of(rule))
                findings += duplicate_payments(rule, mine, recent)
        for finding in findings:
            record(uow, finding, wallet.id, self.signer)


def _signer_rule(uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet | None) -> RiskRule:
    return _rules_or_builtin(uow, tags, wallet, SIGNER_KINDS)[0]


def _chain_rules(uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet) -> list[RiskRule]:
    return _rules_or_builtin(uow, tags, wallet, CHAIN_KINDS)


def _rules_or_builtin(
    uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet | None, kinds: frozenset[str]
) -> list[RiskRule]:
    try:
        policy = active_policy(uow, tags, wallet).document
    except DomainError:
        # A policy that fails its integrity check must not switch the always-on rules off.
        from walletsvc.policy.risk import BUILTIN_RULES

        return [r for r in BUILTIN_RULES if r.kind in kinds]
    return stream_rules(policy, kinds)


def _horizon(rules: Sequence[RiskRule], policy: PolicyDocument) -> timedelta:
    seconds = [int(parse_duration(r.params["window"])) for r in rules if "window" in r.params]  # type: ignore[call-overload]
    if any(r.kind == "velocity_fraction" for r in rules):
        seconds += [v.window for v in policy.velocity]
    # new_destination_large looks at single requests: the last hour is enough to catch up.
    return timedelta(seconds=max(seconds, default=3600))


# --- Snapshots -------------------------------------------------------------------------------


def request_snapshot(uow: ReadUnitOfWork, wallet: Wallet, since: datetime) -> RequestSnapshot:
    """Requests (accepted and denied) of ``wallet`` since ``since``, in time order."""
    events = uow.audit_events.with_actions_since(
        ("withdrawal.requested", "withdrawal.denied"), since
    )
    ids = [e.subject_id for e in events if e.action == "withdrawal.requested" and e.subject_id]
    rows = {w.id: w for w in uow.withdrawals.with_ids(ids)}
    first_paid = _first_paid(uow, wallet, {str(e.data.get("destination")) for e in events})
    records = []
    for ev in events:
        record = _record(ev, wallet, rows, first_paid)
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: r.at)
    return RequestSnapshot(tuple(records))


def _record(
    ev: AuditEvent,
    wallet: Wallet,
    rows: dict[str, Withdrawal],
    first_paid: dict[str, datetime],
) -> RequestRecord | None:
    destination = str(ev.data.get("destination", ""))
    earliest = first_paid.get(destination)
    if ev.action == "withdrawal.denied":
        if ev.subject_id != wallet.id:
            return None
        at = ev.created_at
        return RequestRecord(
            f"denied:{ev.seq}",
            at,
            ev.actor,
            wallet.name,
            destination,
            int(ev.data.get("amount_sat", 0)),
            "deny",
            holds=False,
            paid_before=earliest is not None and earliest < at,
        )
    row = rows.get(ev.subject_id or "")
    if row is None or row.wallet_id != wallet.id:
        return None
    return RequestRecord(
        row.id,
        row.created_at,
        ev.actor,
        wallet.name,
        row.destination,
        row.amount_sat,
        str(row.decision.get("outcome", "allow")),
        holds=row.status in HOLDING_STATUSES,
        paid_before=earliest is not None and earliest < row.created_at,
    )


def _first_paid(uow: ReadUnitOfWork, wallet: Wallet, destinations: set[str]) -> dict[str, datetime]:
    """When each destination was first paid from this wallet (signed or later)."""
    if not destinations:
        return {}
    rows = uow.withdrawals.first_created_by_destination(
        wallet.id, sorted(destinations), PAID_STATUSES
    )
    return {dest: _aware(at) for dest, at in rows}


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def recent_payments(
    uow: ReadUnitOfWork, wallet: Wallet, new: Sequence[Payment], window: timedelta
) -> list[Payment]:
    """Payments of our other transactions confirmed within ``window`` before ``new``."""
    since = min(p.at for p in new) - window
    skip = {p.txid for p in new}
    txs = uow.transactions.of_wallet_confirmed_since(wallet.id, since)
    out: list[Payment] = []
    for tx in txs:
        if tx.txid not in skip and tx.confirmed_at is not None:
            out += payments_of(uow, wallet, tx.raw_tx, tx.confirmed_at)
    return out


def payments_of(uow: ReadUnitOfWork, wallet: Wallet, raw_hex: str, at: datetime) -> list[Payment]:
    """The outputs of one of our transactions that pay someone else (not our change)."""
    tx = CTransaction.deserialize(bytes.fromhex(raw_hex))
    txid = b2lx(tx.GetTxid())
    scripts = [bytes(o.scriptPubKey).hex() for o in tx.vout]
    ours = uow.addresses.ours_among(scripts)
    return [
        Payment(txid, n, script, int(o.nValue), wallet.name, at)
        for n, (o, script) in enumerate(zip(tx.vout, scripts, strict=True))
        if script not in ours
    ]
