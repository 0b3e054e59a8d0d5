"""The composition root: settings -> database, KEK, chain backend, signer client, worker, scanner.

The HTTP app, the CLI and the tests all build their parts here, so there is one wiring.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from walletsvc.bootstrap.approval_kinds import register_approval_kinds
from walletsvc.chain.factory import open_chain
from walletsvc.chainsync.scanner import Scanner
from walletsvc.config import Settings
from walletsvc.db.database import Database
from walletsvc.domain.errors import DependencyUnavailable, SigningRefused
from walletsvc.domain.ports import ChainBackend
from walletsvc.governance import approvals, policy_changes
from walletsvc.governance.login_throttle import LoginThrottle
from walletsvc.incident.risk import RiskMonitor
from walletsvc.incident.rotation import RotationService
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.kek import load_kek
from walletsvc.keys.sealing import TotpSealer
from walletsvc.payouts.signing import SigningPipeline
from walletsvc.payouts.worker import PayoutWorker
from walletsvc.signer.client import SignerClient
from walletsvc.treasury.fee_bumps import FeeBumper
from walletsvc.treasury.sweeps import SweepService

log = logging.getLogger(__name__)
_DEPENDENCIES = ("chain", "database", "signer")


@dataclass
class Runtime:
    settings: Settings
    # The KEK itself stays here, in the composition root: the service gets the row tagger, the
    # database the audit key, staff checks the TOTP sealer. No seed and no seed key: those
    # live in the signer process, reached only through ``signer`` (walletsvc.signer.client).
    tags: RowTagger
    totp_secrets: TotpSealer
    db: Database
    chain: ChainBackend
    signer: SignerClient
    worker: PayoutWorker
    scanner: Scanner
    sweeper: SweepService
    fee_bumper: FeeBumper
    risk: RiskMonitor
    rotation: RotationService
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
        risk = RiskMonitor(db, tags)
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
        return cls(
            settings=settings,
            tags=tags,
            totp_secrets=kek.totp_sealer(),
            db=db,
            chain=chain,
            signer=signer,
            worker=worker,
            scanner=scanner,
            sweeper=sweeper,
            fee_bumper=fee_bumper,
            risk=risk,
            rotation=rotation,
        )

    def tick(self) -> None:
        """One pass: follow the chain, bump stuck batches, sign and broadcast, then sweep."""
        self.governance_tick()
        self.scanner.sync()
        self.risk.evaluate()  # a risk freeze lands before the worker's claim below
        self.fee_bumper.bump_stuck()  # stored here, broadcast by the worker's pass below
        self.worker.run_once()
        self.scanner.sync()
        self.rotation.run()  # after a key rotation: old epochs to cold, held payouts re-signed
        if self.settings.auto_sweep and self.sweeper.after_scan():
            self.worker.broadcast_signed()
        self.anchor_audit()

    def anchor_audit(self) -> None:
        """Hand the signer the audit head, once a pass: `audit verify` then detects a chain
        rewritten or cut short below it, even by someone holding the audit key."""
        with self.db.read() as uow:
            head = uow.audit_events.head()
        if head is None or head.last_seq == 0:
            return
        try:
            self.signer.anchor_audit(head.last_seq, head.last_hash)
        except SigningRefused as exc:
            log.error("AUDIT LOG TAMPERING: the signer refused the audit head: %s", exc.message)

    def governance_tick(self, now: datetime | None = None) -> None:
        """Expire approval requests past their deadline (and their withdrawals), then apply
        policy changes whose time lock has run out."""
        approvals.expire_due(self.db, self.tags, now=now)
        policy_changes.apply_due(self.db, self.tags, now=now)

    def start_background(self) -> None:
        thread = threading.Thread(target=self._loop, name="walletsvc-worker", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.background_pass()
            self._stop.wait(self.settings.worker_interval_s)

    def background_pass(self) -> None:
        """One pass of the loop. It survives anything; a dependency that is down is logged
        once when it goes down and once when it is back, not with a traceback every pass."""
        try:
            self.tick()
        except Exception as exc:
            self._note_trouble(self._trouble_of(exc), exc)
        else:
            self._note_trouble(None, None)
        self.passes += 1

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
        self.chain.close()
        self.signer.close()
        self.db.dispose()


def open_database(settings: Settings) -> Database:
    """The database alone (CLI commands that need no chain), with the audit key from the KEK."""
    kek = load_kek(settings.kek_path)
    register_approval_kinds(SignerClient(settings))
    return Database(settings.database_url, audit_key=kek.audit_key())
