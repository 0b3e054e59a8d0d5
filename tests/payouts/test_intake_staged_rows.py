"""Inside one intake batch, accepted payouts are staged (``_StagedRows``) and inserted with
one multi-row INSERT per table instead of an ORM flush each (walletsvc.payouts.intake). What
must still hold, and fails here if the staged rows are not sent at the right moments:

* the trust ramp of a destination counts the payouts to it accepted earlier in the same
  batch (the staged rows are sent before ``_history`` reads the destination's payouts);
* a payout above an approval tier gets its approval request in the batch, naming it (the
  staged rows are sent before ``approvals.open_request`` reads the payout back);
* every new payout announces its first status on the outbox (``withdrawal.status_changed``,
  ``previous_status`` None), which the ORM flush hook no longer does for bulk-inserted rows.

Each batch is made deterministic as in test_intake_batches.py: the wallet's write lock is
held until every request is queued behind it, in order (no sleeps)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from sqlalchemy import event, select, text

from tests.conftest import WALLET
from tests.governance_helpers import default_document, install
from tests.helpers import DEADLINE_S, external_destination, wait_until
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Withdrawal
from walletsvc.db.models_webhooks import OutboxEvent
from walletsvc.db.outbox import WITHDRAWAL_STATUS_CHANGED
from walletsvc.domain.errors import PolicyDenied
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.governance import approvals
from walletsvc.governance.allowlist import propose_entry
from walletsvc.payouts.intake import (
    KIND,
    MAX_BATCH,
    WithdrawalInput,
    WithdrawalResult,
    request_withdrawal,
    waiting_intakes,
)
from walletsvc.wallets.service import get_wallet

TOKEN = "tok-staged"
RAMP_SAT = 25_000  # what a new allowlist entry may receive in its first period
SMALL_SAT = 1_234_567  # below the default policy's 0.1 BTC approval tier
ABOVE_TIER_SAT = 20_000_000  # above it: 2 of treasury must approve
NEW_MINER, _ = external_destination("a miner just put on the allowlist")
MINER, _ = external_destination("a staged-rows miner")
OTHER_MINER, _ = external_destination("another staged-rows miner")

Outcome = WithdrawalResult | BaseException


@dataclass(frozen=True)
class Payout:
    """One request of a batch."""

    key: str
    destination: str
    amount_sat: int
    reference: str | None = None


def _wallet_id(runtime: Runtime) -> str:
    with runtime.db.read() as uow:
        return get_wallet(uow, WALLET).id


def decide_in_one_batch(runtime: Runtime, payouts: list[Payout]) -> list[Outcome]:
    """Each payout's outcome (its result or the exception it raised), all of them decided by
    one intake transaction in list order.

    The wallet's write lock is held while the requests queue, one at a time, so their
    arrival order is the list's; released, the first request's thread runs the batch. The
    commit count proves it was one batch: otherwise the assertions below would test the
    per-request path, where nothing is staged across payouts."""
    assert len(payouts) <= MAX_BATCH
    wallet_id = _wallet_id(runtime)
    outcomes: dict[int, Outcome] = {}
    holding, release = threading.Event(), threading.Event()

    def hold_the_wallet() -> None:
        with runtime.db.write(wallet_id=wallet_id) as uow:
            uow.session.execute(text("SELECT 1"))  # a transaction that commits, on both kinds
            holding.set()
            release.wait(DEADLINE_S)

    def post(i: int) -> None:
        payout = payouts[i]
        body = WithdrawalInput(WALLET, payout.destination, payout.amount_sat, payout.reference)
        try:
            outcomes[i] = request_withdrawal(
                runtime.db,
                runtime.tags,
                body=body,
                idempotency_key=payout.key,
                token_id=TOKEN,
                actor="token:engine",
            )
        except Exception as exc:  # a denial is an outcome to check, not a test error
            outcomes[i] = exc

    commits: list[object] = []

    def count_commit(connection: object) -> None:
        commits.append(connection)

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    assert holding.wait(DEADLINE_S)

    def queued(count: int) -> bool:
        # ``count`` requests in the wallet's queue, the first also waiting for the write lock.
        return (
            waiting_intakes(runtime.db, wallet_id) == count
            and runtime.db.waiting_writers(wallet_id) == 1
        )

    posters: list[threading.Thread] = []
    try:
        # One at a time, so arrival order is list order: each is queued before the next.
        for i in range(len(payouts)):
            posters.append(threading.Thread(target=post, args=(i,)))
            posters[-1].start()
            wait_until(functools.partial(queued, i + 1), f"request {i} queued")
        event.listen(runtime.db.engine, "commit", count_commit)
    finally:
        release.set()
        holder.join(DEADLINE_S)
    for thread in posters:
        thread.join(DEADLINE_S)
    event.remove(runtime.db.engine, "commit", count_commit)
    decided = [outcomes[i] for i in range(len(payouts))]
    # The holder's commit, then one for the whole batch (none if the batch failed: then its
    # error, raised to every request, is in the outcomes shown).
    assert len(commits) == 2, f"not one committed batch; outcomes: {decided!r}"
    return decided


def _created(outcome: Outcome) -> WithdrawalResult:
    assert isinstance(outcome, WithdrawalResult), f"not accepted: {outcome!r}"
    assert outcome.created
    return outcome


def test_the_trust_ramp_counts_the_payouts_accepted_earlier_in_the_batch(
    runtime: Runtime,
) -> None:
    # No cooling-off, so the entry is usable at once and its ramp applies from the start:
    # the destination may receive RAMP_SAT in its first day.
    install(
        runtime,
        default_document(
            allowlist={
                "required": False,
                "cooling_off": 0,
                "trust_ramp": {"initial_max_sat": RAMP_SAT, "doubling_period": "24h"},
            }
        ),
    )
    propose_entry(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        address=NEW_MINER,
        label="new miner",
        proposer=approvals.Requester(actor="token:engine", staff_id=None),
    )
    # 10k + 10k fit the 25k ramp; a third 10k would make 30k; a last 5k makes exactly 25k
    # with the first two (the denied one holds nothing). Only the staged rows of the first
    # two make the third one's total exceed the ramp.
    payouts = [
        Payout("ramp-0", NEW_MINER, 10_000),
        Payout("ramp-1", NEW_MINER, 10_000),
        Payout("ramp-2", NEW_MINER, 10_000),
        Payout("ramp-3", NEW_MINER, 5_000),
    ]
    outcomes = decide_in_one_batch(runtime, payouts)

    assert [type(o) for o in outcomes] == [
        WithdrawalResult,
        WithdrawalResult,
        PolicyDenied,
        WithdrawalResult,
    ]
    denied = outcomes[2]
    assert isinstance(denied, PolicyDenied) and denied.decision is not None
    assert {r.rule for r in denied.decision.rules if r.result == "fail"} == {"trust_ramp"}
    accepted = [_created(outcomes[i]).withdrawal_id for i in (0, 1, 3)]
    with runtime.db.read() as uow:
        held = uow.session.execute(
            select(Withdrawal.id, Withdrawal.amount_sat).where(Withdrawal.destination == NEW_MINER)
        ).all()
    assert sorted(held) == sorted(zip(accepted, (10_000, 10_000, 5_000), strict=True))


def test_a_payout_above_the_tier_gets_its_approval_request_inside_the_batch(
    runtime: Runtime,
) -> None:
    # The default policy: above 0.1 BTC, 2 of treasury. The small payout before the big one
    # is staged when the big one's approval request reads the big one back.
    payouts = [
        Payout("tier-0", MINER, SMALL_SAT),
        Payout("tier-1", OTHER_MINER, ABOVE_TIER_SAT),
        Payout("tier-2", MINER, SMALL_SAT),
    ]
    outcomes = decide_in_one_batch(runtime, payouts)

    small_before, above_tier, small_after = (_created(o) for o in outcomes)
    assert above_tier.view is not None
    request_id = above_tier.view["approval_request_id"]
    assert request_id is not None
    wallet_id = _wallet_id(runtime)
    with runtime.db.read() as uow:
        statuses = {
            w.id: w.status
            for w in uow.session.scalars(
                select(Withdrawal).where(Withdrawal.wallet_id == wallet_id)
            )
        }
        request = approvals.get_request(uow, request_id)
        assert approvals.request_for_subject(uow, KIND, above_tier.withdrawal_id) == request
        # What the approvers approve is this payout: read back from the database, so only
        # a payout inserted before the request was opened can be in it.
        assert (request.kind, request.subject_id, request.status) == (
            KIND,
            above_tier.withdrawal_id,
            "pending",
        )
        assert (request.required_group, request.m) == ("treasury", 2)
        assert request.content["withdrawal_id"] == above_tier.withdrawal_id
        assert request.content["amount_sat"] == ABOVE_TIER_SAT
        assert request.content["destination"] == OTHER_MINER
    # All three committed, with the statuses the policy gave them.
    assert statuses == {
        small_before.withdrawal_id: WithdrawalStatus.APPROVED.value,
        above_tier.withdrawal_id: WithdrawalStatus.PENDING_APPROVAL.value,
        small_after.withdrawal_id: WithdrawalStatus.APPROVED.value,
    }


def test_each_new_payout_of_a_batch_announces_its_first_status_once(runtime: Runtime) -> None:
    payouts = [
        Payout(f"event-{i}", destination, SMALL_SAT + i, f"round 7 share {i}")
        for i, destination in enumerate([MINER, OTHER_MINER, MINER, OTHER_MINER])
    ]
    # The same key and body again: a replay, which is no new payout and announces nothing.
    payouts.append(payouts[0])
    outcomes = decide_in_one_batch(runtime, payouts)

    created = [_created(o) for o in outcomes[:4]]
    replay = outcomes[4]
    assert isinstance(replay, WithdrawalResult) and not replay.created
    with runtime.db.read() as uow:
        announced = [
            e.payload
            for e in uow.session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type == WITHDRAWAL_STATUS_CHANGED)
                .order_by(OutboxEvent.seq)
            )
        ]
    # Exactly one event per new payout, in the batch's order, each its first status.
    assert announced == [
        {
            "withdrawal_id": result.withdrawal_id,
            "reference": payout.reference,
            "amount_sat": payout.amount_sat,
            "status": WithdrawalStatus.APPROVED.value,
            "previous_status": None,
        }
        for result, payout in zip(created, payouts[:4], strict=True)
    ]
