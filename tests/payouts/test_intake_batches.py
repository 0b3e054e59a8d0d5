"""A wallet's queued payout requests are decided together, in one transaction, in arrival
order, each seeing the ones before it (walletsvc.payouts.intake, ``_WalletIntake``): the
velocity limit holds exactly inside the batch, an Idempotency-Key repeated inside it is a
replay (or a 409 for another body) without disturbing the others, and a denial is audited
and raised only after the batch commits. The batch is made deterministic by holding the
wallet's write lock until every request is queued behind it (no sleeps)."""

from __future__ import annotations

import threading

from sqlalchemy import event, func, select, text

from tests.conftest import WALLET
from tests.governance_helpers import default_document, install
from tests.helpers import DEADLINE_S, audit_events, external_destination, wait_until
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Withdrawal
from walletsvc.domain.errors import IdempotencyConflict, PolicyDenied
from walletsvc.payouts.intake import (
    MAX_BATCH,
    WithdrawalInput,
    WithdrawalResult,
    request_withdrawal,
    waiting_intakes,
)
from walletsvc.wallets.service import get_wallet

AMOUNT = 10_000
DEST, _ = external_destination("batched miner")
OTHER, _ = external_destination("another batched miner")
THIRD, _ = external_destination("a third batched miner")


def test_a_batch_decides_in_order_holds_the_limit_and_keeps_keys_apart(runtime: Runtime) -> None:
    install(
        runtime,
        default_document(
            velocity=[
                # Two payouts in all, one per destination.
                {"id": "wallet-1h", "window": "1h", "scope": "wallet", "max_count": 2},
                {"id": "dest-1h", "window": "1h", "scope": "destination", "max_count": 1},
            ]
        ),
    )
    with runtime.db.read() as uow:
        wallet_id = get_wallet(uow, WALLET).id
    # (key, destination): 8 distinct keys, one key sent again with the same body (a replay)
    # and one with another body (409). 10 requests, one batch (MAX_BATCH is larger).
    destinations = [DEST, DEST, OTHER, THIRD, OTHER, THIRD, DEST, OTHER]
    requests = [(f"k-{i}", d) for i, d in enumerate(destinations)]
    requests += [("k-0", DEST), ("k-2", DEST)]  # k-0 and k-2 are accepted
    assert len(requests) <= MAX_BATCH
    outcomes: dict[int, object] = {}
    holding, release = threading.Event(), threading.Event()

    def hold_the_wallet() -> None:
        with runtime.db.write(wallet_id=wallet_id) as uow:
            uow.session.execute(text("SELECT 1"))  # a transaction that commits, on both kinds
            holding.set()
            release.wait(DEADLINE_S)

    def post(i: int) -> None:
        key, destination = requests[i]
        try:
            outcomes[i] = request_withdrawal(
                runtime.db,
                runtime.tags,
                body=WithdrawalInput(WALLET, destination, AMOUNT, None),
                idempotency_key=key,
                token_id="tok-batch",
                actor="test",
            )
        except Exception as exc:
            outcomes[i] = exc

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    assert holding.wait(DEADLINE_S)
    posters = []
    try:
        # One at a time, so arrival order is request order: each waits in the wallet's queue
        # (the first also as its runner, for the write lock) before the next is sent.
        for i in range(len(requests)):
            posters.append(threading.Thread(target=post, args=(i,)))
            posters[-1].start()
            wait_until(
                lambda i=i: (
                    waiting_intakes(runtime.db, wallet_id) == i + 1
                    and runtime.db.waiting_writers(wallet_id) == 1
                ),
                f"request {i} queued",
            )
        commits: list[object] = []

        def count_commit(connection: object) -> None:
            commits.append(connection)

        event.listen(runtime.db.engine, "commit", count_commit)
    finally:
        release.set()
        holder.join(DEADLINE_S)
    for thread in posters:
        thread.join(DEADLINE_S)
    event.remove(runtime.db.engine, "commit", count_commit)
    assert len(commits) == 2  # the holder's, then one for all ten requests

    created = [outcomes[i] for i in range(8)]
    # In arrival order, each seeing the ones before it: k-1 is the destination's second,
    # k-3 the wallet's third, and every later one breaks one limit or both.
    assert [isinstance(o, WithdrawalResult) for o in created] == [True, False, True] + [False] * 5
    failed = [
        {r.rule for r in o.decision.rules if r.result == "fail"}
        for o in created
        if isinstance(o, PolicyDenied) and o.decision is not None
    ]
    assert failed[:2] == [{"velocity.dest-1h"}, {"velocity.wallet-1h"}]
    assert len(failed) == 6
    replay = outcomes[8]
    assert isinstance(replay, WithdrawalResult) and not replay.created
    first = outcomes[0]
    assert isinstance(first, WithdrawalResult)
    assert replay.withdrawal_id == first.withdrawal_id
    assert isinstance(outcomes[9], IdempotencyConflict)
    with runtime.db.read() as uow:
        held = uow.session.execute(
            select(func.count(), func.sum(Withdrawal.amount_sat)).where(
                Withdrawal.wallet_id == wallet_id
            )
        ).one()
    assert tuple(held) == (2, 2 * AMOUNT)
    assert len(audit_events(runtime.db, "withdrawal.requested")) == 2
    assert len(audit_events(runtime.db, "withdrawal.denied")) == 6
