"""A payout round takes its wallet's write lock and honours the freeze gate, as a single
payout request does: it waits for a writer holding the wallet, and a freeze applied while
it waits refuses it with nothing written."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from tests.conftest import WALLET, Tokens
from tests.helpers import external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import PayoutRound, Wallet
from walletsvc.domain.errors import Frozen
from walletsvc.governance.tokens import authenticate_token
from walletsvc.incident.freeze import freeze
from walletsvc.payouts.rounds import RoundInput, RoundPayoutInput, RoundResult, request_round

DEADLINE_S = 60  # a generous bound on waiting for an observable condition, never a pause


def _wait_until(condition: Callable[[], bool]) -> None:
    pause = threading.Event()
    for _ in range(DEADLINE_S * 100):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("the condition was never reached")


def _round(runtime: Runtime, tokens: Tokens, key: str) -> Callable[[], RoundResult]:
    with runtime.db.read() as uow:
        token_id = authenticate_token(uow, runtime.tags, tokens.all).token_id
    payouts = tuple(
        RoundPayoutInput(external_destination(f"locked round {i}")[0], 1_000_000 + i, None)
        for i in range(3)
    )

    def request() -> RoundResult:
        return request_round(
            runtime.db,
            runtime.tags,
            body=RoundInput(WALLET, "round", payouts),
            idempotency_key=key,
            token_id=token_id,
            actor="test",
        )

    return request


def _rounds(runtime: Runtime) -> int:
    with runtime.db.read() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(PayoutRound)) or 0)


@pytest.mark.parametrize("frozen_meanwhile", [False, True])
def test_a_round_waits_for_its_wallet_and_honours_a_freeze_applied_meanwhile(
    runtime: Runtime, tokens: Tokens, frozen_meanwhile: bool
) -> None:
    with runtime.db.read() as uow:
        wallet_id = uow.session.scalars(select(Wallet.id).where(Wallet.name == WALLET)).one()
    request = _round(runtime, tokens, f"locked-{frozen_meanwhile}")
    holding, release = threading.Event(), threading.Event()
    outcome: list[RoundResult | BaseException] = []

    def hold_the_wallet() -> None:  # a payout decision of the same wallet in progress
        with runtime.db.write(wallet_id=wallet_id):
            holding.set()
            release.wait(DEADLINE_S)

    def post_round() -> None:
        try:
            outcome.append(request())
        except BaseException as exc:  # asserted below, in the test's thread
            outcome.append(exc)

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    assert holding.wait(DEADLINE_S)
    threads = [holder, threading.Thread(target=post_round)]
    threads[1].start()
    try:
        _wait_until(lambda: runtime.db.waiting_writers(wallet_id) == 1)
        assert _rounds(runtime) == 0 and not outcome  # queued behind the wallet's writer
        if frozen_meanwhile:
            freezer = threading.Thread(
                target=freeze,
                args=(runtime.db,),
                kwargs={"scope": "withdrawals", "wallet": WALLET, "reason": "x", "actor": "t"},
            )
            freezer.start()
            threads.append(freezer)
            # PostgreSQL: the freeze commits at once; SQLite: it queues first for the writer.
            _wait_until(
                lambda: not freezer.is_alive() or runtime.db.waiting_writers(wallet_id) == 2
            )
    finally:
        release.set()
        for thread in threads:
            thread.join(DEADLINE_S)
    if frozen_meanwhile:
        assert len(outcome) == 1 and isinstance(outcome[0], Frozen), outcome
        assert _rounds(runtime) == 0
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], RoundResult), outcome
        assert outcome[0].created and _rounds(runtime) == 1
