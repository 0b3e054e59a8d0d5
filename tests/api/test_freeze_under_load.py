"""POST /v1/freeze while payout requests fill every thread of the shared pool, each waiting
for the wallet's write lock: the freeze neither waits for a thread nor for those payouts.
It commits before any of them, so every one of them is then refused as frozen."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import DEADLINE_S, audit_events, external_destination, request_payout, wait_until
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Wallet
from walletsvc.payouts.intake import waiting_intakes

MORE_THAN_THE_POOL = 10  # payouts beyond the pool's threads: they wait for a thread


def test_a_freeze_goes_before_payouts_queued_in_every_pool_thread(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    with runtime.db.read() as uow:
        wallet_id = uow.session.scalars(select(Wallet.id).where(Wallet.name == WALLET)).one()
    destination, _ = external_destination("queued miner")
    holding, release = threading.Event(), threading.Event()

    def queued() -> int:
        # Payouts wait in the wallet's intake queue (walletsvc.payouts.intake), the one that
        # runs its next transaction (still counted there) for the write lock as well.
        return waiting_intakes(runtime.db, wallet_id)

    def hold_the_wallet() -> None:  # a long payout decision in progress
        with runtime.db.write(wallet_id=wallet_id):
            holding.set()
            release.wait(DEADLINE_S)

    # The threads sync routes share (settings.route_threads), all to be taken by payouts.
    pool_threads = runtime.settings.route_threads
    payouts = pool_threads + MORE_THAN_THE_POOL
    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    assert holding.wait(DEADLINE_S)
    statuses: list[int] = []

    def post(i: int) -> None:
        response = request_payout(client, tokens.all, key=f"load-{i}", destination=destination)
        statuses.append(response.status_code)

    posters = [threading.Thread(target=post, args=(i,)) for i in range(payouts)]
    for thread in posters:
        thread.start()
    frozen: list[int] = []
    try:
        # Every thread of the shared pool is a payout waiting for the wallet.
        wait_until(lambda: queued() >= pool_threads, "the pool is full")

        def post_freeze() -> None:
            body = {"reason": "incident drill", "scope": "withdrawals", "wallet": WALLET}
            frozen.append(
                client.post("/v1/freeze", headers=auth(tokens.all), json=body).status_code
            )

        freezer = threading.Thread(target=post_freeze)
        freezer.start()
        if runtime.db.is_sqlite:
            # One writer: the freeze waits for the holder, but queues ahead of the payouts'
            # runner.
            wait_until(lambda: runtime.db.waiting_writers(wallet_id) == 2, "the freeze is queued")
        else:
            # The freeze gate is its own lock: it commits while the wallet is still held.
            wait_until(lambda: frozen == [201], "the freeze returned")
            assert holder.is_alive() and not release.is_set()
    finally:
        release.set()
        holder.join(DEADLINE_S)
    freezer.join(DEADLINE_S)
    for thread in posters:
        thread.join(DEADLINE_S)
    assert frozen == [201]
    assert statuses == [423] * payouts  # each saw the freeze: it went first
    assert audit_events(runtime.db, "withdrawal.requested") == []
