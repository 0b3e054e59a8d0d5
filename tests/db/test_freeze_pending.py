"""``Database.freeze_pending``: the signal on which an intake batch in flight stops short
and commits (walletsvc.payouts.intake), so a freeze waits for one payout, not sixteen. True
while a freeze of this process waits for the writers in flight, false before and after."""

from __future__ import annotations

import threading

from sqlalchemy import text

from tests.conftest import WALLET
from tests.helpers import DEADLINE_S, wait_until
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.incident.freeze import freeze
from walletsvc.wallets.service import get_wallet


def test_a_waiting_freeze_is_seen_by_the_writer_in_flight(runtime: Runtime) -> None:
    db = runtime.db
    with db.read() as uow:
        wallet_id = get_wallet(uow, WALLET).id
    holding, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def intake_in_flight() -> None:  # as an intake batch holds its locks (freeze gate shared)
        with db.write(wallet_id=wallet_id, honour_freeze=True) as uow:
            uow.session.execute(text("SELECT 1"))
            holding.set()
            release.wait(DEADLINE_S)
            seen.append(db.freeze_pending())

    writer = threading.Thread(target=intake_in_flight)
    writer.start()
    assert holding.wait(DEADLINE_S)
    assert not db.freeze_pending()  # nothing waits yet
    freezer = threading.Thread(
        target=freeze,
        kwargs={
            "db": db,
            "scope": "withdrawals",
            "wallet": WALLET,
            "reason": "drill",
            "actor": "test",
        },
    )
    freezer.start()
    try:
        wait_until(db.freeze_pending, "the freeze waits for the writer in flight")
    finally:
        release.set()
        writer.join(DEADLINE_S)
    freezer.join(DEADLINE_S)
    assert seen == [True]  # the writer saw it from inside its transaction
    assert not db.freeze_pending()  # and it is gone once the freeze is done
