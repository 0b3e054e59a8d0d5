"""Payout requests: validate, decide by policy, record. Idempotent per (token, key)."""

from __future__ import annotations

import base64
import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import ChainTransaction, Wallet, Withdrawal, new_id
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.db.outbox import WITHDRAWAL_STATUS_CHANGED, withdrawal_status_payload
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.repositories.withdrawals import HeldWindow
from walletsvc.db.tags import authorization_message, withdrawal_authorization_message
from walletsvc.domain.address import Destination, decode_address
from walletsvc.domain.errors import IdempotencyConflict, InvalidInput, NotFound, PolicyDenied
from walletsvc.domain.money import require_payable
from walletsvc.domain.network import Network
from walletsvc.domain.withdrawal import (
    HOLDING_STATUSES,
    WithdrawalStatus,
    transition,
)
from walletsvc.governance import approvals
from walletsvc.governance.allowlist import entries_for_destinations, entry_for_destination
from walletsvc.governance.approvals import KindContext
from walletsvc.governance.policies import ActivePolicy, IntegrityFailure, active_policy
from walletsvc.keys.integrity import RowTagger, content_digest
from walletsvc.metrics import POLICY_DECISIONS, POLICY_RULE_RESULTS
from walletsvc.payouts.signing import tip_height
from walletsvc.policy.document import PolicyDocument
from walletsvc.policy.engine import (
    AllowlistEntry,
    Decision,
    HeldPayout,
    HeldTotal,
    HistorySnapshot,
    PayoutRequest,
    approval_deadline,
    evaluate,
    history_horizon,
    trust_ramp_period,
    velocity_windows,
)
from walletsvc.wallets.freezes import require_withdrawals_open
from walletsvc.wallets.service import get_wallet

MAX_REFERENCE_LENGTH = 200
MAX_IDEMPOTENCY_KEY_LENGTH = 200


@dataclass(frozen=True)
class WithdrawalInput:
    wallet: str
    destination: str
    amount_sat: int
    reference: str | None


@dataclass(frozen=True)
class WithdrawalResult:
    withdrawal_id: str
    created: bool  # False: an idempotent replay of an earlier request
    # A new withdrawal's view (as ``show_withdrawal`` would read it back), built from what
    # intake just wrote: the reply costs no second transaction. None for a replay.
    view: dict[str, Any] | None = None


def request_hash(body: WithdrawalInput) -> str:
    return content_digest(
        {
            "wallet": body.wallet,
            "destination": body.destination,
            "amount_sat": body.amount_sat,
            "reference": body.reference,
        }
    )


def request_withdrawal(
    db: Database,
    tags: RowTagger,
    *,
    body: WithdrawalInput,
    idempotency_key: str,
    token_id: str,
    actor: str,
    now: datetime | None = None,
) -> WithdrawalResult:
    require_idempotency_key(idempotency_key)
    amount = require_payable(body.amount_sat, field="amount_sat")
    require_reference(body.reference, field="reference")
    digest = request_hash(body)
    try:
        outcome = _locked_request(
            db, tags, body, amount, digest, idempotency_key, token_id, actor, now
        )
    except _StaleWallet:
        # The name now names another wallet (deleted and created again): resolve it afresh.
        forget_wallet_identity(db, body.wallet)
        outcome = _locked_request(
            db, tags, body, amount, digest, idempotency_key, token_id, actor, now
        )
    # A denial is raised only after the transaction holding its audit event has committed.
    if isinstance(outcome, PolicyDenied):
        raise outcome
    return outcome


def _locked_request(
    db: Database,
    tags: RowTagger,
    body: WithdrawalInput,
    amount: int,
    digest: str,
    idempotency_key: str,
    token_id: str,
    actor: str,
    now: datetime | None,
) -> WithdrawalResult | PolicyDenied:
    # Outside any lock: the wallet (its id and network never change) and the destination's
    # decoding. Only the decision and the insert run under the locks.
    wallet_id, network = _wallet_identity(db, body.wallet)
    destination = decode_address(body.destination, network, field="destination")
    job = _IntakeJob(body, amount, digest, idempotency_key, token_id, actor, now, destination)
    return _combiner(db, wallet_id).submit(db, tags, wallet_id, job)


# The most requests of one wallet decided in one transaction: enough to share a commit, the
# locks and the audit chain's head among a burst, few enough that a freeze (which waits for
# the intake transaction in flight) does not wait long.
MAX_BATCH = 16


@dataclass
class _IntakeJob:
    """One payout request waiting for its wallet's next intake transaction."""

    body: WithdrawalInput
    amount: int
    digest: str
    idempotency_key: str
    token_id: str
    actor: str
    now: datetime | None
    destination: Destination
    done: bool = False
    outcome: WithdrawalResult | PolicyDenied | None = None
    error: BaseException | None = None


class _WalletIntake:
    """Decides a wallet's queued payout requests together (flat combining).

    A wallet's payouts are decided one at a time whatever happens (its limits must hold
    exactly), so instead of one transaction each, a request that finds the wallet busy
    queues here, and whoever runs the wallet's next transaction decides every request
    queued by then (up to ``MAX_BATCH``), in arrival order, each seeing the ones before it:
    one lock statement, one audit chain insert and one commit for the lot. A request refused
    before it wrote anything (a replayed key with another body, a freeze, an integrity
    failure) is refused alone; a failure after a request began writing rolls the whole
    transaction back and is raised to every request in it (nothing of theirs committed, so
    their clients retry with the same Idempotency-Key).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[_IntakeJob] = deque()
        self._busy = False

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(
        self, db: Database, tags: RowTagger, wallet_id: str, job: _IntakeJob
    ) -> WithdrawalResult | PolicyDenied:
        with self._cond:
            self._queue.append(job)
        while True:
            with self._cond:
                while self._busy and not job.done:
                    self._cond.wait()
                if job.done:
                    break
                self._busy = True  # this thread runs the wallet's next transaction
            batch: list[_IntakeJob] = []
            try:
                db.wait_for_freezes()  # a freeze on its way goes first
                _decide_batch(
                    db,
                    tags,
                    wallet_id,
                    batch,
                    functools.partial(self._take, batch),
                    self._give_back,
                )
            except BaseException as exc:
                for queued in batch or [job]:
                    if not queued.done:
                        queued.error, queued.done = exc, True
                if not batch:  # failed before taking its batch: its own request is out
                    with self._cond:
                        if job in self._queue:
                            self._queue.remove(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        assert job.outcome is not None
        return job.outcome

    def _give_back(self, jobs: list[_IntakeJob]) -> None:
        """Requests a batch stopped short of (for a freeze): first in the queue again."""
        with self._cond:
            self._queue.extendleft(reversed(jobs))

    def _take(self, batch: list[_IntakeJob]) -> list[str]:
        """Called once the write lock's queue lets the runner through: the batch is every
        request queued by then (the runner's own among them unless more than a batch came
        first); the locks to take are their idempotency keys'."""
        with self._cond:
            while self._queue and len(batch) < MAX_BATCH:
                batch.append(self._queue.popleft())
        return [idempotency_lock(j.token_id, j.idempotency_key) for j in batch]


_INTAKES: weakref.WeakKeyDictionary[Database, dict[str, _WalletIntake]] = (
    weakref.WeakKeyDictionary()
)
_INTAKES_GUARD = threading.Lock()


def _combiner(db: Database, wallet_id: str) -> _WalletIntake:
    with _INTAKES_GUARD:
        by_wallet = _INTAKES.setdefault(db, {})
        intake = by_wallet.get(wallet_id)
        if intake is None:
            intake = by_wallet[wallet_id] = _WalletIntake()
        return intake


def waiting_intakes(db: Database, wallet_id: str) -> int:
    """Payout requests of this process queued for the wallet's next intake transaction (for
    tests that wait on a queue instead of sleeping)."""
    return _combiner(db, wallet_id).waiting()


def _decide_batch(
    db: Database,
    tags: RowTagger,
    wallet_id: str,
    batch: list[_IntakeJob],
    take: Callable[[], list[str]],
    give_back: Callable[[list[_IntakeJob]], None],
) -> None:
    # The wallet's lock (its limits are the wallet's alone), every request's idempotency key
    # (the same key may name another wallet in a concurrent request), and the freeze gate
    # shared. ``take`` fills ``batch`` once the wallet's turn has come.
    with db.write(wallet_id=wallet_id, also_lock=take, honour_freeze=True) as uow:
        # One moment for the batch: its requests are decided (and dated) together, so they
        # share their velocity windows' reads.
        moment = datetime.now(UTC)
        keys = [(job.destination.address, job.token_id) for job in batch]
        staged = _StagedRows()
        totals = _BatchTotals(uow, wallet_id, keys, before_read=functools.partial(staged.send, uow))
        stored = uow.idempotency_keys.for_token_keys(
            [(job.token_id, job.idempotency_key) for job in batch]
        )
        known = {pair: (row.request_hash, row.withdrawal_id) for pair, row in stored.items()}
        settled = _Settled(
            totals=totals,
            addresses=tuple(dict.fromkeys(job.destination.address for job in batch)),
            keys=known,
        )
        for position, job in enumerate(batch):
            if position and db.freeze_pending():
                # A freeze waits for this transaction: commit the requests decided so far
                # and leave the rest to the next one (which will see the freeze).
                give_back(batch[position:])
                del batch[position:]
                break
            try:
                judged = _judge(
                    uow,
                    tags,
                    body=job.body,
                    amount=job.amount,
                    digest=job.digest,
                    idempotency_key=job.idempotency_key,
                    token_id=job.token_id,
                    now=job.now or moment,
                    destination=job.destination,
                    wallet_id=wallet_id,
                    settled=settled,
                )
            except Exception as exc:  # nothing of this request was written: it alone fails
                job.error, job.done = exc, True
                continue
            if isinstance(judged, WithdrawalResult):
                job.outcome = judged
                continue
            job.outcome = _record(
                uow,
                tags,
                judged,
                body=job.body,
                amount=job.amount,
                digest=job.digest,
                idempotency_key=job.idempotency_key,
                token_id=job.token_id,
                actor=job.actor,
                staged=staged,
            )
            if isinstance(job.outcome, WithdrawalResult):  # it holds money from now on
                known[(job.token_id, job.idempotency_key)] = (
                    job.digest,
                    job.outcome.withdrawal_id,
                )
                totals.accepted(job.amount, judged.destination.address, job.token_id, judged.moment)
        # A failing insert rolls the whole batch back and is raised to each of its requests.
        staged.send(uow)
    # Committed: only now are the outcomes (a denial included) handed back.
    for job in batch:
        job.done = True


class _StaleWallet(Exception):
    """The wallet name resolved outside the lock names another wallet now."""


# Wallet name -> (id, network), both fixed for a wallet's life: resolving them needs no
# transaction per request. Checked under the lock (``_decide``).
_WALLET_IDENTITIES: weakref.WeakKeyDictionary[Database, dict[str, tuple[str, Network]]] = (
    weakref.WeakKeyDictionary()
)


def _wallet_identity(db: Database, name: str) -> tuple[str, Network]:
    known = _WALLET_IDENTITIES.setdefault(db, {})
    identity = known.get(name)
    if identity is None:
        with db.read() as uow:
            wallet = get_wallet(uow, name)
            identity = (wallet.id, Network(wallet.network))
        known[name] = identity
    return identity


def forget_wallet_identity(db: Database, name: str) -> None:
    _WALLET_IDENTITIES.get(db, {}).pop(name, None)


def idempotency_lock(token_id: str, idempotency_key: str) -> str:
    """The write lock name of one (token, Idempotency-Key) pair."""
    return f"idempotency:{token_id}:{idempotency_key}"


def require_idempotency_key(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(
            f"Idempotency-Key header is required (1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters)",
            field="Idempotency-Key",
        )


def require_reference(reference: str | None, *, field: str) -> None:
    if reference is not None and len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidInput(f"{field} is longer than {MAX_REFERENCE_LENGTH} characters", field=field)


@dataclass
class _Settled:
    """What every request of one intake transaction shares (``_decide``), read once for
    all of them: none of it can change while the transaction holds its locks."""

    wallet: Wallet | None = None
    policy: ActivePolicy | None = None
    totals: _BatchTotals | None = None
    # Every request's destination, and the allowlist entries of those (read at first use).
    addresses: tuple[str, ...] = ()
    entries: dict[str, AllowlistEntry] | None = None
    entries_one_by_one: bool = False
    # (token, Idempotency-Key) -> (request hash, withdrawal id): the batch's keys already
    # stored, read at its start, and the ones its own requests recorded since.
    keys: dict[tuple[str, str], tuple[str, str]] | None = None

    def allowlist_entry(
        self, uow: ReadUnitOfWork, tags: RowTagger, wallet_id: str, address: str
    ) -> AllowlistEntry | None:
        if self.entries is None and not self.entries_one_by_one:
            try:
                self.entries = entries_for_destinations(uow, tags, wallet_id, self.addresses)
            except IntegrityFailure:
                # A tampered entry fails the requests to its destination only.
                self.entries_one_by_one = True
        if self.entries is None:
            return entry_for_destination(uow, tags, wallet_id, address)
        return self.entries.get(address)


class _BatchTotals:
    """Velocity totals for the requests of one intake transaction: each window read from
    the counters once (the first request's read covers every request's destination and
    token in one statement), plus the payouts the transaction accepted after that read.
    Exact: a read sees every payout flushed before it, and only later ones are added."""

    def __init__(
        self,
        uow: ReadUnitOfWork,
        wallet_id: str,
        keys: list[tuple[str, str]],
        *,
        before_read: Callable[[], None],
    ) -> None:
        self._uow = uow
        # Sends the accepted payouts not inserted yet: a read below must see all of them.
        self.before_read = before_read
        self._wallet_id = wallet_id
        self._keys = keys  # every request's (destination, token id) in the transaction
        # window -> (satoshis, count, how many accepted payouts the read already saw)
        self._read: dict[HeldWindow, tuple[int, int, int]] = {}
        self._accepted: list[tuple[int, str, str, datetime]] = []

    def __call__(self, windows: list[HeldWindow]) -> list[tuple[int, int]]:
        missing = [w for w in windows if w not in self._read]
        if missing:
            wanted = list(dict.fromkeys(missing + self._same_for_the_others(missing)))
            self.before_read()
            seen = len(self._accepted)
            sums = self._uow.withdrawals.counted_totals_since(self._wallet_id, wanted)
            for window, (amount, count) in zip(wanted, sums, strict=True):
                self._read.setdefault(window, (amount, count, seen))
        totals = []
        for window in windows:
            amount, count, seen = self._read[window]
            for paid, destination, token_id, created_at in self._accepted[seen:]:
                if (
                    created_at >= window.since
                    and window.destination in (None, destination)
                    and (not window.by_token or (window.token_id or "") == token_id)
                ):
                    amount, count = amount + paid, count + 1
            totals.append((amount, count))
        return totals

    def _same_for_the_others(self, windows: list[HeldWindow]) -> list[HeldWindow]:
        others = []
        for window in windows:
            for destination, token_id in self._keys:
                if window.destination is not None:
                    others.append(replace(window, destination=destination))
                if window.by_token:
                    others.append(replace(window, token_id=token_id or None))
        return others

    def accepted(self, amount: int, destination: str, token_id: str | None, at: datetime) -> None:
        self._accepted.append((amount, destination, token_id or "", at))


@dataclass(frozen=True)
class _Judged:
    wallet: Wallet
    destination: Destination
    policy: ActivePolicy
    decision: Decision
    moment: datetime


def _judge(
    uow: UnitOfWork,
    tags: RowTagger,
    *,
    body: WithdrawalInput,
    amount: int,
    digest: str,
    idempotency_key: str,
    token_id: str,
    now: datetime | None,
    destination: Destination | None,
    wallet_id: str | None,
    settled: _Settled | None = None,
) -> WithdrawalResult | _Judged:
    """The replay of an earlier request, or the policy's decision: reads only, so whatever
    it raises leaves nothing of this request behind."""
    if settled is not None and settled.keys is not None:
        stored = settled.keys.get((token_id, idempotency_key))
        if stored is not None:
            require_same_body(stored[0], digest)
            return WithdrawalResult(stored[1], created=False)
    else:
        replay = _replay(uow, token_id, idempotency_key, digest)
        if replay is not None:
            return replay
    moment = now or datetime.now(UTC)
    wallet, destination, policy, decision = _decide(
        uow,
        tags,
        body,
        amount,
        token_id,
        moment,
        destination=destination,
        wallet_id=wallet_id,
        settled=settled,
    )
    return _Judged(wallet, destination, policy, decision, moment)


def _record(
    uow: UnitOfWork,
    tags: RowTagger,
    judged: _Judged,
    *,
    body: WithdrawalInput,
    amount: int,
    digest: str,
    idempotency_key: str,
    token_id: str,
    actor: str,
    staged: _StagedRows,
) -> WithdrawalResult | PolicyDenied:
    """The decision's writes: the denial's audit event, or the withdrawal and its idempotency
    key (staged for the batch's multi-row inserts), its audit event, its first status event
    and (above an approval tier) its approval request."""
    wallet, destination, policy = judged.wallet, judged.destination, judged.policy
    moment = judged.moment
    decision = judged.decision.to_dict()  # once: the row, the audit event and the metrics
    _count(decision)
    if decision["outcome"] == "deny":
        uow.audit(
            actor,
            "withdrawal.denied",
            "wallet",
            wallet.id,
            {"destination": destination.address, "amount_sat": amount, "decision": decision},
        )
        return PolicyDenied(
            _deny_message(judged.decision),
            decision=judged.decision,
            field=deny_field(judged.decision),
        )
    values = new_withdrawal_values(
        tags,
        wallet_id=wallet.id,
        token_id=token_id,
        destination=destination,
        amount=amount,
        reference=body.reference,
        decision=decision,
        policy_hash=policy.sha256,
        at=moment,
    )
    staged.withdrawals.append(values)
    staged.keys.append(
        {
            "id": new_id(),
            "token_id": token_id,
            "key": idempotency_key,
            "request_hash": digest,
            "withdrawal_id": values["id"],
            "created_at": moment,
        }
    )
    uow.audit(
        actor,
        "withdrawal.requested",
        "withdrawal",
        values["id"],
        {
            "wallet": wallet.name,
            "destination": destination.address,
            "amount_sat": amount,
            "reference": body.reference,
            "status": values["status"],
            "decision": decision,
            "policy_sha256": policy.sha256,
        },
    )
    # Inserted in bulk, the row passes no ORM flush that would announce its first status.
    uow.emit(
        WITHDRAWAL_STATUS_CHANGED,
        withdrawal_status_payload(
            values["id"],
            reference=body.reference,
            amount_sat=amount,
            status=values["status"],
            previous_status=None,
        ),
    )
    request_id = None
    required = judged.decision.required
    if required is not None and values["status"] == WithdrawalStatus.PENDING_APPROVAL.value:
        # Same transaction: a payout never waits without its approval request, which reads
        # the payout back for its content.
        staged.send(uow)
        request_id = approvals.open_request(
            uow,
            tags,
            kind=KIND,
            subject_id=values["id"],
            group=required.group,
            m=required.m,
            expires_at=approval_deadline(policy.document, moment),
            requester=actor,
            requester_staff_id=None,
            now=moment,
        ).id
    return WithdrawalResult(
        values["id"],
        created=True,
        view=new_withdrawal_view(Withdrawal(**values), wallet.name, request_id),
    )


def new_withdrawal_values(
    tags: RowTagger,
    *,
    wallet_id: str,
    token_id: str | None,
    destination: Destination,
    amount: int,
    reference: str | None,
    decision: dict[str, Any],
    policy_hash: str,
    at: datetime,
    round_id: str | None = None,
    round_index: int | None = None,
) -> dict[str, Any]:
    """A new payout's ``withdrawals`` row as column values, for a multi-row INSERT: approved
    (and MAC-authorised for the signer) when the policy allows it, else waiting for its
    approvals."""
    allowed = decision["outcome"] == "allow"
    status = WithdrawalStatus.APPROVED if allowed else WithdrawalStatus.PENDING_APPROVAL
    withdrawal_id = new_id()
    script = destination.script_pubkey.hex()
    mac = (
        tags.tag(authorization_message(withdrawal_id, wallet_id, script, amount))
        if allowed
        else None
    )
    return {
        "id": withdrawal_id,
        "wallet_id": wallet_id,
        "token_id": token_id,
        "destination": destination.address,
        "script_pubkey": script,
        "amount_sat": amount,
        "reference": reference,
        "status": status.value,
        "decision": decision,
        "policy_hash": policy_hash,
        "authorization_mac": mac,
        "transaction_id": None,
        "fee_share_sat": None,
        "failure_reason": None,
        "created_at": at,
        "updated_at": at,
        "round_id": round_id,
        "round_index": round_index,
    }


@dataclass
class _StagedRows:
    """The payouts an intake transaction accepted and has not inserted yet, with their
    idempotency keys: one multi-row INSERT per table for the batch (an ORM flush per payout
    cost more than its decision). Sent before anything reads payouts back (the velocity
    counters, the destination's payouts, an approval request's content) and at the end."""

    withdrawals: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)

    def send(self, uow: UnitOfWork) -> None:
        if self.withdrawals:
            uow.withdrawals.add_many(self.withdrawals)
            uow.idempotency_keys.add_many(self.keys)  # after the payouts they reference
            self.withdrawals, self.keys = [], []


def require_same_body(stored_hash: str, digest: str) -> None:
    """An Idempotency-Key replays only the body it first came with (409 otherwise)."""
    if stored_hash != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body",
            field="Idempotency-Key",
        )


def _replay(uow: ReadUnitOfWork, token_id: str, key: str, digest: str) -> WithdrawalResult | None:
    existing = uow.idempotency_keys.by_token_and_key(token_id, key)
    if existing is None:
        return None
    require_same_body(existing.request_hash, digest)
    return WithdrawalResult(existing.withdrawal_id, created=False)


def _decide(
    uow: ReadUnitOfWork,
    tags: RowTagger,
    body: WithdrawalInput,
    amount: int,
    token_id: str,
    moment: datetime,
    *,
    destination: Destination | None = None,
    wallet_id: str | None = None,
    settled: _Settled | None = None,
) -> tuple[Wallet, Destination, ActivePolicy, Decision]:
    """The policy's decision on a payout request now; writes nothing (dry runs share it).
    ``destination``: already decoded; ``wallet_id``: the wallet the caller locked (resolved
    from its name outside the lock: ``_StaleWallet`` if the name names another one now);
    ``settled``: the wallet, its open withdrawals and its policy as an earlier request of
    the same locked transaction found them."""
    if settled is not None and settled.wallet is not None and settled.policy is not None:
        # Within one intake transaction none of these can change: a policy change takes
        # the global lock exclusively (held shared here), a freeze the freeze gate
        # exclusively (held shared here; SQLite: the one writer lock).
        wallet, policy = settled.wallet, settled.policy
    else:
        wallet = get_wallet(uow, body.wallet)
        if wallet_id is not None and wallet.id != wallet_id:
            raise _StaleWallet(body.wallet)
        # A frozen wallet takes no new payouts (423, nothing written): the payout engine
        # retries with the same Idempotency-Key once the freeze is lifted. Payouts accepted
        # before the freeze stay held until then.
        require_withdrawals_open(uow, wallet)
        policy = active_policy(uow, tags, wallet)
        if settled is not None:
            settled.wallet, settled.policy = wallet, policy
    if destination is None:
        destination = decode_address(body.destination, Network(wallet.network), field="destination")
    decision = evaluate(
        PayoutRequest(
            wallet=wallet.name,
            destination=destination.address,
            amount_sat=amount,
            token_id=token_id,
        ),
        _history(
            uow,
            wallet,
            destination.address,
            token_id,
            policy.document,
            moment,
            (
                settled.allowlist_entry(uow, tags, wallet.id, destination.address)
                if settled is not None
                else entry_for_destination(uow, tags, wallet.id, destination.address)
            ),
            settled.totals if settled is not None else None,
        ),
        policy.document,
        moment,
        revision=policy.sha256,
    )
    return wallet, destination, policy, decision


def _count(decision: dict[str, Any]) -> None:
    POLICY_DECISIONS.labels(decision["outcome"]).inc()
    for rule in decision["rules"]:
        POLICY_RULE_RESULTS.labels(rule["rule"], rule["result"]).inc()


def preview_withdrawal(
    db: Database,
    tags: RowTagger,
    *,
    body: WithdrawalInput,
    token_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A dry run: the decision ``request_withdrawal`` would make now, the same checks and
    errors (bad amount or address 422, frozen 423), and nothing written or audited. A denial
    is an answer here, not an error. The decision can differ by the time of the real request
    (other payouts count against the same velocity windows)."""
    amount = require_payable(body.amount_sat, field="amount_sat")
    if body.reference is not None and len(body.reference) > MAX_REFERENCE_LENGTH:
        raise InvalidInput(
            f"reference is longer than {MAX_REFERENCE_LENGTH} characters", field="reference"
        )
    with db.read() as uow:
        wallet, destination, policy, decision = _decide(
            uow, tags, body, amount, token_id, now or datetime.now(UTC)
        )
    status = {
        "allow": WithdrawalStatus.APPROVED,
        "require_approval": WithdrawalStatus.PENDING_APPROVAL,
    }
    would_be = status.get(decision.outcome)
    return {
        "wallet": wallet.name,
        "destination": destination.address,
        "amount_sat": amount,
        "reference": body.reference,
        "status": would_be.value if would_be else None,
        "decision": decision.to_dict(),
        "policy_sha256": policy.sha256,
    }


def _history(
    uow: ReadUnitOfWork,
    wallet: Wallet,
    destination: str,
    token_id: str | None,
    policy: PolicyDocument,
    moment: datetime,
    entry: AllowlistEntry | None,
    counted: _BatchTotals | None = None,
) -> HistorySnapshot:
    """What the engine needs of the money on its way out, from the velocity counters.

    Per velocity window and scope, the counter buckets inside it plus the rows of its oldest,
    partial bucket (no payout of the window is loaded into Python, and the cost does not
    grow with the payouts in the window), and the destination's own payouts for the trust
    ramp.
    Destinations compare exactly: every stored one went through ``decode_address`` as this
    one did, so they share its canonical form.
    """
    statuses = [s.value for s in HOLDING_STATUSES]
    windows = velocity_windows(policy)
    # One statement for every window (one round trip under the wallet's lock), from the
    # velocity counters: a bounded number of counter rows per window, however many payouts.
    held_windows = [
        HeldWindow(
            moment - timedelta(seconds=window),
            destination=destination if scope == "destination" else None,
            token_id=token_id if scope == "token" else None,
            by_token=scope == "token",
        )
        for scope, window in windows
    ]
    sums = (
        counted(held_windows)
        if counted is not None
        else uow.withdrawals.counted_totals_since(wallet.id, held_windows)
    )
    totals = [
        HeldTotal(scope, window, amount, count)
        for (scope, window), (amount, count) in zip(windows, sums, strict=True)
    ]
    ramp_period = trust_ramp_period(policy)
    if ramp_period is not None and counted is not None:
        counted.before_read()
    rows = (
        uow.withdrawals.held_to_destination_since(
            wallet.id, destination, moment - ramp_period, statuses
        )
        if ramp_period is not None
        else []
    )
    return HistorySnapshot(
        payouts=tuple(
            HeldPayout(amount_sat=a, destination=d, token_id=t, created_at=c) for a, d, t, c in rows
        ),
        allowlist_entry=entry,
        velocity_totals=tuple(totals),
    )


def failed_rules(decision: Decision) -> list[Any]:
    return [r for r in decision.rules if r.result in ("fail", "error")]


def _deny_message(decision: Decision) -> str:
    failed = failed_rules(decision)
    if not failed:
        return "the policy denies this payout"
    return "the policy denies this payout: " + "; ".join(f"{r.rule}: {r.detail}" for r in failed)


def deny_field(decision: Decision) -> str | None:
    """The request field a denial is about: the destination, or else the amount."""
    for rule in failed_rules(decision):
        if rule.rule in ("allowlist", "denylist", "trust_ramp") or ".destination" in rule.rule:
            return "destination"
    return "amount_sat"


def get_withdrawal(uow: ReadUnitOfWork, withdrawal_id: str) -> Withdrawal:
    row = uow.withdrawals.get(withdrawal_id)
    if row is None:
        raise NotFound("no such withdrawal", field="id")
    return row


def cancel_withdrawal(db: Database, withdrawal_id: str, *, actor: str) -> None:
    with db.write() as uow:
        row = get_withdrawal(uow, withdrawal_id)
        row.status = transition(row.status, WithdrawalStatus.CANCELLED).value
        row.authorization_mac = None
        row.updated_at = datetime.now(UTC)
        # Its approval request (if any) can no longer be decided.
        approvals.cancel_for_subject(
            uow, actor=actor, now=row.updated_at, kind=KIND, subject_id=row.id
        )
        uow.audit(actor, "withdrawal.cancelled", "withdrawal", row.id, {})


def withdrawal_view(uow: ReadUnitOfWork, row: Withdrawal) -> dict[str, Any]:
    wallet = uow.wallets.get(row.wallet_id)
    request = approvals.request_for_subject(uow, KIND, row.id)
    tx = uow.transactions.get(row.transaction_id) if row.transaction_id else None
    confirmations = 0
    if tx is not None and tx.block_height is not None:
        confirmations = max(0, tip_height(uow) - tx.block_height + 1)
    return _view(
        row,
        wallet.name if wallet else None,
        request.id if request else None,
        approvals.decisions_view(uow, request) if request else [],
        tx,
        confirmations,
    )


def new_withdrawal_view(
    row: Withdrawal, wallet_name: str, request_id: str | None
) -> dict[str, Any]:
    """``withdrawal_view`` of a withdrawal just requested, without reading it back: it has
    no transaction and its approval request (if any) no decisions yet."""
    return _view(row, wallet_name, request_id, [], None, 0)


def _view(
    row: Withdrawal,
    wallet_name: str | None,
    request_id: str | None,
    decisions: list[dict[str, Any]],
    tx: ChainTransaction | None,
    confirmations: int,
) -> dict[str, Any]:
    return {
        "id": row.id,
        "wallet": wallet_name,
        "destination": row.destination,
        "amount_sat": row.amount_sat,
        "reference": row.reference,
        "status": row.status,
        "decision": row.decision,
        "approval_request_id": request_id,
        "approvals": decisions,
        "txid": tx.txid if tx else None,
        "raw_tx": tx.raw_tx if tx else None,
        "fee_sat": row.fee_share_sat,
        "transaction_fee_sat": tx.fee_sat if tx else None,
        "confirmations": confirmations,
        "failure_reason": row.failure_reason,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


# The two orders a cursor can continue: newest created first (the default listing) or oldest
# change first (polling with updated_since). The kind is inside the cursor, so a cursor of one
# order given to the other is refused rather than silently skipping rows.
NEWEST = "created"
CHANGES = "changed"


def encode_cursor(moment: datetime, withdrawal_id: str, *, kind: str = NEWEST) -> str:
    """An opaque, URL-safe cursor: base64url of the last row's (time, id), unpadded."""
    raw = f"{moment.isoformat()}|{withdrawal_id}".encode()
    if kind != NEWEST:
        raw = f"{kind}|".encode() + raw
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, *, kind: str = NEWEST) -> tuple[datetime, str]:
    """The (time, id) a cursor from :func:`encode_cursor` names; 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if kind != NEWEST:
            prefix, raw = raw.split("|", 1)
            if prefix != kind:
                raise ValueError(kind)
        stamp, withdrawal_id = raw.split("|", 1)
        moment = datetime.fromisoformat(stamp)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput("malformed cursor", field="cursor") from exc
    if moment.tzinfo is None or not withdrawal_id:
        raise InvalidInput("malformed cursor", field="cursor")
    return moment, withdrawal_id


def list_withdrawals(
    uow: ReadUnitOfWork,
    *,
    status: str | None,
    wallet: str | None,
    cursor: str | None,
    limit: int,
    reference: str | None = None,
    updated_since: datetime | None = None,
) -> tuple[list[Withdrawal], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last row of the previous page.

    With ``updated_since`` (polling): the rows changed at or after it, oldest change first;
    the cursor is then the (updated_at, id) of the last row, and the caller keeps the largest
    ``updated_at`` it has seen for its next poll."""
    if status is not None:
        WithdrawalStatus(status)
    wallet_id = get_wallet(uow, wallet).id if wallet is not None else None
    if updated_since is not None:
        after = decode_cursor(cursor, kind=CHANGES) if cursor else None
        rows = uow.withdrawals.changed_since(
            status=status,
            wallet_id=wallet_id,
            reference=reference,
            since=updated_since,
            after=after,
            limit=limit + 1,
        )
    else:
        before = decode_cursor(cursor) if cursor else None
        rows = uow.withdrawals.page(
            status=status, wallet_id=wallet_id, before=before, limit=limit + 1, reference=reference
        )
    next_cursor = None
    if len(rows) > limit:
        rows, last = rows[:limit], rows[limit - 1]
        if updated_since is not None:
            next_cursor = encode_cursor(last.updated_at, last.id, kind=CHANGES)
        else:
            next_cursor = encode_cursor(last.created_at, last.id)
    return rows, next_cursor


# --- Approvals -------------------------------------------------------------------------------

KIND = "withdrawal"


def approval_content(w: Withdrawal) -> dict[str, Any]:
    """What approvers of a payout approve: exactly who gets how much from which wallet."""
    return {
        "kind": KIND,
        "withdrawal_id": w.id,
        "wallet_id": w.wallet_id,
        "destination": w.destination,
        "script_pubkey": w.script_pubkey,
        "amount_sat": w.amount_sat,
        "reference": w.reference,
    }


def _evaluate_again(ctx: KindContext, w: Withdrawal) -> Decision:
    """The active policy's decision on ``w`` now, over the wallet's current history without
    ``w`` itself (as when it was requested)."""
    wallet = ctx.uow.wallets.get(w.wallet_id)
    if wallet is None:
        raise NotFound("no such wallet", field="wallet")
    policy = active_policy(ctx.uow, ctx.tags, wallet)
    # A quorum is reached rarely, so this reads the held payouts of the horizon as rows (the
    # engine's list path) rather than intake's aggregates: that lets it leave out exactly this
    # payout, which is itself held while it waits.
    statuses = [s.value for s in HOLDING_STATUSES]
    rows = ctx.uow.withdrawals.held_since(
        wallet.id, ctx.now - history_horizon(policy.document), statuses
    )
    own = (w.amount_sat, w.destination, w.token_id, w.created_at)
    if own in rows:
        rows.remove(own)
    payouts = tuple(
        HeldPayout(amount_sat=a, destination=d, token_id=t, created_at=c) for a, d, t, c in rows
    )
    entry = entry_for_destination(ctx.uow, ctx.tags, wallet.id, w.destination)
    return evaluate(
        PayoutRequest(
            wallet=wallet.name,
            destination=w.destination,
            amount_sat=w.amount_sat,
            token_id=w.token_id,
        ),
        HistorySnapshot(payouts=payouts, allowlist_entry=entry),
        policy.document,
        ctx.now,
    )


class WithdrawalApprovals:
    """A payout above an approval tier (or off the allowlist) waiting for its quorum."""

    name = KIND

    def content(self, uow: ReadUnitOfWork, subject_id: str) -> dict[str, Any]:
        return approval_content(get_withdrawal(uow, subject_id))

    def on_approved(self, ctx: KindContext, request: ApprovalRequest) -> None:
        # Quorum reached: the policy is evaluated again (it or the wallet's history may have
        # changed while the payout waited); a deny rejects the payout. Otherwise approved and
        # MAC-authorised for the signer, in the transaction that records the final approval.
        w = get_withdrawal(ctx.uow, request.subject_id)
        decision = _evaluate_again(ctx, w)
        if decision.outcome == "deny":
            ctx.uow.audit(
                ctx.actor,
                "withdrawal.denied_at_approval",
                "withdrawal",
                w.id,
                {"approval_request_id": request.id, "decision": decision.to_dict()},
            )
            self._move(ctx, request, WithdrawalStatus.REJECTED)
            return
        w = self._move(ctx, request, WithdrawalStatus.APPROVED)
        w.authorization_mac = ctx.tags.tag(withdrawal_authorization_message(w))

    def on_rejected(self, ctx: KindContext, request: ApprovalRequest) -> None:
        self._move(ctx, request, WithdrawalStatus.REJECTED)

    def on_expired(self, ctx: KindContext, request: ApprovalRequest) -> None:
        self._move(ctx, request, WithdrawalStatus.EXPIRED)

    def _move(
        self, ctx: KindContext, request: ApprovalRequest, target: WithdrawalStatus
    ) -> Withdrawal:
        w = get_withdrawal(ctx.uow, request.subject_id)
        w.status = transition(w.status, target).value
        w.updated_at = ctx.now
        ctx.uow.audit(
            ctx.actor,
            f"withdrawal.{target.value}",
            "withdrawal",
            w.id,
            {"approval_request_id": request.id, "amount_sat": w.amount_sat},
        )
        return w


# --- Read use cases --------------------------------------------------------------------------


def show_withdrawal(db: Database, withdrawal_id: str) -> dict[str, Any]:
    with db.read() as uow:
        return withdrawal_view(uow, get_withdrawal(uow, withdrawal_id))


def withdrawals_index(
    db: Database,
    *,
    status: str | None,
    wallet: str | None,
    cursor: str | None,
    limit: int,
    reference: str | None = None,
    updated_since: datetime | None = None,
) -> dict[str, Any]:
    """A page of withdrawals (newest first, or oldest change first with ``updated_since``)
    and the cursor of the next page."""
    if status is not None and status not in {s.value for s in WithdrawalStatus}:
        raise InvalidInput(f"unknown status {status!r}", field="status")
    if updated_since is not None and updated_since.tzinfo is None:
        raise InvalidInput(
            "updated_since needs a time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)",
            field="updated_since",
        )
    with db.read() as uow:
        rows, next_cursor = list_withdrawals(
            uow,
            status=status,
            wallet=wallet,
            cursor=cursor,
            limit=limit,
            reference=reference,
            updated_since=updated_since,
        )
        return {
            "withdrawals": [withdrawal_view(uow, r) for r in rows],
            "next_cursor": next_cursor,
        }
