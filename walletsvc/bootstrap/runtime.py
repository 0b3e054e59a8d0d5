"""The composition root: settings -> database, KEK, chain backend, signer client, worker, scanner.

The HTTP app, the CLI and the tests all build their parts here, so there is one wiring.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

from walletsvc.bootstrap.approval_kinds import register_approval_kinds
from walletsvc.chain.factory import open_chain
from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.chain.mempool import CoreMempoolSource
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.chainsync.mempool import MempoolWatcher
from walletsvc.chainsync.scanner import Scanner
from walletsvc.config import Settings
from walletsvc.db.database import Database
from walletsvc.db.leader import LeaderLease
from walletsvc.domain.errors import DependencyUnavailable, DomainError, SigningRefused
from walletsvc.domain.ports import ChainBackend, MempoolSource
from walletsvc.governance import approvals, policy_changes
from walletsvc.governance.login_throttle import LoginThrottle
from walletsvc.incident.risk import RiskMonitor
from walletsvc.incident.rotation import RotationService
from walletsvc.incident.shield import Shield
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.kek import load_kek
from walletsvc.keys.sealing import WebhookSecretSealer
from walletsvc.payouts.signing import AUDIT_HEAD_ORDER, SigningPipeline, audit_head
from walletsvc.payouts.worker import PayoutWorker
from walletsvc.signer.client import SignerClient
from walletsvc.treasury.fee_bumps import FeeBumper
from walletsvc.treasury.refills import RefillService
from walletsvc.treasury.sweeps import SweepService
from walletsvc.webhooks.dispatcher import RetrySchedule, WebhookDispatcher

log = logging.getLogger(__name__)
_DEPENDENCIES = ("chain", "database", "signer")


@dataclass
class Runtime:
    settings: Settings
    # The KEK itself stays here, in the composition root: the service gets the row tagger, the
    # database the audit key. No seed, no seed key and no TOTP secret: those live in the
    # signer process, reached only through ``signer`` (walletsvc.signer.client), which also
    # checks every step-up code and records every approval decision.
    tags: RowTagger
    db: Database
    chain: ChainBackend
    signer: SignerClient
    worker: PayoutWorker
    scanner: Scanner
    sweeper: SweepService
    fee_bumper: FeeBumper
    risk: RiskMonitor
    rotation: RotationService
    refills: RefillService
    shield: Shield
    # Watches the mempool for thefts (None: the chain backend offers no mempool feed).
    mempool_watcher: MempoolWatcher | None
    webhook_secrets: WebhookSecretSealer
    webhooks: WebhookDispatcher
    # Only the holder of this lease runs background passes (one active worker per database).
    leader: LeaderLease
    # Completed background passes: lets tests wait for "N more passes" instead of sleeping.
    passes: int = 0
    # Failed staff logins per client address and username (this process's memory).
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _trouble: str | None = None  # what made the last background pass fail (None: it passed)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings, *, chain: ChainBackend | None = None) -> Runtime:
        kek = load_kek(settings.kek_path)
        tags = kek.row_tagger()
        signer = SignerClient(settings)
        register_approval_kinds(signer)
        db = Database(settings.database_url, audit_key=kek.audit_key())
        chain = chain or open_chain(settings)
        risk = RiskMonitor(db, tags, signer)  # its automatic freezes reach the signer first
        scanner = Scanner(db, chain, start_height=settings.scan_start_height)
        scanner.block_watchers.append(risk.on_block)
        # One signing pipeline for every service that signs: the signer refusing its own
        # work goes to the risk monitor, which freezes the wallet.
        pipeline = SigningPipeline(
            db, chain, signer, settings, on_signer_failure=risk.signer_failed
        )
        worker = PayoutWorker(db, tags, pipeline)
        sweeper = SweepService(db, tags, pipeline)
        fee_bumper = FeeBumper(db, tags, pipeline)
        rotation = RotationService(db, tags, pipeline)
        refills = RefillService(db, tags, chain, KernelScriptVerifier(), settings)
        shield = Shield(db, tags, pipeline)
        scanner.block_watchers.append(shield.on_block)
        scanner.rollback_watchers.append(shield.on_rollback)
        watcher = _mempool_watcher(db, chain, settings)
        if watcher is not None:
            watcher.theft_hooks.append(shield.on_theft)
        webhook_secrets = kek.webhook_sealer()
        return cls(
            settings=settings,
            tags=tags,
            db=db,
            chain=chain,
            signer=signer,
            worker=worker,
            scanner=scanner,
            sweeper=sweeper,
            fee_bumper=fee_bumper,
            risk=risk,
            rotation=rotation,
            refills=refills,
            shield=shield,
            mempool_watcher=watcher,
            webhook_secrets=webhook_secrets,
            webhooks=open_webhook_dispatcher(db, webhook_secrets, settings),
            leader=LeaderLease(db, ttl_s=settings.leader_lease_ttl_s),
        )

    def tick(self) -> None:
        """One pass: follow the chain, bump stuck batches, sign and broadcast, then sweep."""
        self.governance_tick()
        if not self.db.is_sqlite:
            # Audit events whose writer died between its commit and its append.
            self.db.append_pending_audit()
        self.scanner.sync()
        self.risk.evaluate()  # a risk freeze lands before the worker's claim below
        self.fee_bumper.bump_stuck()  # stored here, broadcast by the worker's pass below
        self.worker.run_once()
        self.scanner.sync()
        self.rotation.run()  # after a key rotation: old epochs to cold, held payouts re-signed
        self.shield.rebroadcast()  # the theft shield's answers still racing, whatever the freeze
        if self.settings.auto_sweep and self.sweeper.after_scan():
            self.worker.broadcast_signed()
        self.anchor_audit()

    def anchor_audit(self) -> None:
        """Hand the signer the audit head once a pass, besides every signature: `audit verify`
        then detects a chain rewritten or cut short below it, even by whoever holds the
        audit key."""
        try:
            with AUDIT_HEAD_ORDER:
                with self.db.read() as uow:
                    seq, head_hash = audit_head(uow)
                if seq == 0:
                    return
                self.signer.anchor_audit(seq, head_hash)
        except SigningRefused as exc:
            log.error("AUDIT LOG TAMPERING: the signer refused the audit head: %s", exc.message)
            anchored = self.signer.status().get("audit_anchor")
            self.risk.audit_anchor_refused(
                int(anchored["seq"]) if isinstance(anchored, dict) else None, exc
            )

    def governance_tick(self, now: datetime | None = None) -> None:
        """Expire approval requests past their deadline (and their withdrawals), then apply
        policy changes whose time lock has run out."""
        approvals.expire_due(self.db, self.tags, now=now)
        policy_changes.apply_due(self.db, self.tags, self.signer, now=now)

    def close_genesis_when_ready(self) -> bool:
        """At service start: end the signer's trusted enrolment once its enabled approvers
        can meet every quorum of its policy (docs/threat-model.md, "Genesis"). True while
        genesis stays open."""
        try:
            still_open = self.signer.close_genesis(only_if_quorums_met=True)
        except DomainError as exc:
            log.warning("could not ask the signer to close genesis: %s", exc.message)
            return True
        if still_open:
            log.warning(
                "the signer's genesis is open: staff are enrolled on the service's word until "
                "its approvers can meet every quorum of its policy (or `walletsvc signer "
                "close-genesis`)"
            )
        return still_open

    def start_background(self) -> None:
        self.close_genesis_when_ready()
        thread = threading.Thread(target=self._loop, name="walletsvc-worker", daemon=True)
        thread.start()
        self._threads.append(thread)
        if self.mempool_watcher is not None and self.settings.run_mempool_watcher:
            self.mempool_watcher.start(self.settings.mempool_poll_interval_s)
        # Webhooks on a thread of their own: a slow receiver never delays a payout pass.
        sender = threading.Thread(target=self._webhook_loop, name="walletsvc-webhooks", daemon=True)
        sender.start()
        self._threads.append(sender)

    def _webhook_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.webhooks.run_once()
            except Exception as exc:
                # The database is down (the worker loop says so once); try again next time.
                log.debug("webhook pass failed: %s", type(exc).__name__)
            self._stop.wait(self.settings.webhook_interval_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.background_pass()
            self._stop.wait(self.settings.worker_interval_s)

    def background_pass(self) -> None:
        """One pass of the loop, if this process holds the worker's leader lease. It survives
        anything; a dependency that is down is logged once when it goes down and once when
        it is back, not with a traceback every pass."""
        try:
            if not self._lead():
                self.passes += 1
                return
            self.tick()
        except Exception as exc:
            self._note_trouble(self._trouble_of(exc), exc)
        else:
            self._note_trouble(None, None)
        self.passes += 1

    def _lead(self) -> bool:
        """Take or keep the leader lease; a newly taken lease is audited (who leads now)."""
        was_leader = self.leader.held
        if not self.leader.acquire():
            return False
        if not was_leader:
            with self.db.write() as uow:
                uow.audit(
                    "system:worker",
                    "worker.leader_taken",
                    "worker",
                    None,
                    {"holder": self.leader.holder, "pid": os.getpid()},
                )
        return True

    def _trouble_of(self, exc: Exception) -> str:
        if isinstance(exc, DependencyUnavailable):
            return "signer" if "signer" in exc.message else "chain"
        try:
            self.db.ping()
        except Exception:
            return "database"
        return f"error {type(exc).__name__}"

    def _note_trouble(self, trouble: str | None, exc: Exception | None) -> None:
        previous, self._trouble = self._trouble, trouble
        if trouble == previous:
            return
        if previous in _DEPENDENCIES:
            log.warning("%s available again", previous)
        elif previous is not None:
            log.warning("background passes succeed again")
        if trouble in _DEPENDENCIES:
            log.warning("%s unavailable", trouble, extra={"error_type": type(exc).__name__})
        elif trouble is not None:
            # A bug, not an outage: its traceback once, until the passes change state.
            log.error("background pass failed", exc_info=exc)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.mempool_watcher is not None:
            self.mempool_watcher.stop()
            if isinstance(self.mempool_watcher.source, CoreMempoolSource):
                self.mempool_watcher.source.close()
        self.webhooks.close()
        if self.leader.held:
            self.leader.release()
        self.chain.close()
        self.signer.close()
        self.db.dispose()


def _mempool_watcher(
    db: Database, chain: ChainBackend, settings: Settings
) -> MempoolWatcher | None:
    """Bitcoin Core: ZMQ pushes (if configured) and gettxspendingprevout polls; a chain that
    notifies by itself (the embedded development chain) is its own source."""
    source: MempoolSource
    if isinstance(chain, MempoolSource):
        source = chain
    elif isinstance(chain, BitcoinRpcBackend):
        source = CoreMempoolSource(
            chain, rawtx_url=settings.zmq_rawtx_url, sequence_url=settings.zmq_sequence_url
        )
    else:
        return None
    return MempoolWatcher(db, source)


def open_webhook_dispatcher(
    db: Database, sealer: WebhookSecretSealer, settings: Settings
) -> WebhookDispatcher:
    schedule = RetrySchedule(
        max_attempts=settings.webhook_max_attempts,
        base_s=settings.webhook_backoff_base_s,
        cap_s=settings.webhook_backoff_cap_s,
    )
    return WebhookDispatcher(db, sealer, schedule=schedule, timeout_s=settings.webhook_timeout_s)


def open_database(settings: Settings) -> Database:
    """The database alone (CLI commands that need no chain), with the audit key from the KEK."""
    kek = load_kek(settings.kek_path)
    register_approval_kinds(SignerClient(settings))
    return Database(settings.database_url, audit_key=kek.audit_key())
