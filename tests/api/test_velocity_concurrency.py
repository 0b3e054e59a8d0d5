"""200 concurrent payout requests over real HTTP (a live uvicorn on loopback, real threads),
adding up to 5x a velocity limit: the total allowed never exceeds the limit, and every request
gets an answer (no 5xx). The check-and-reserve is atomic under the write lock of
walletsvc/db/database.py (BEGIN IMMEDIATE on SQLite, a row lock on PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from tests.conftest import WALLET, Tokens
from tests.governance_helpers import DEST, default_document, install
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime

REQUESTS = 200
AMOUNT = 25_000
LIMIT = REQUESTS * AMOUNT // 5  # the requests add up to 5x the limit


@pytest.fixture
def live_url(runtime: Runtime) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(runtime.settings, runtime=runtime),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        backlog=512,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


def test_concurrent_payouts_never_exceed_the_velocity_limit(
    runtime: Runtime, tokens: Tokens, live_url: str
) -> None:
    install(
        runtime,
        default_document(
            velocity=[
                {"id": "wallet-1h", "window": "1h", "scope": "wallet", "max_amount_sat": LIMIT}
            ]
        ),
    )
    start = threading.Barrier(REQUESTS)

    def one(i: int) -> tuple[int, str | None]:
        start.wait()  # all threads fire together
        response = httpx.post(
            f"{live_url}/v1/withdrawals",
            json={"wallet": WALLET, "destination": DEST, "amount_sat": AMOUNT},
            headers={"Authorization": f"Bearer {tokens.all}", "Idempotency-Key": f"c-{i}"},
            timeout=180,
        )
        body = response.json()
        status = body.get("status") if response.status_code == 201 else body["error"]["code"]
        return response.status_code, status

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        answers = list(pool.map(one, range(REQUESTS)))

    assert len(answers) == REQUESTS
    outcomes = Counter(answers)
    assert set(outcomes) <= {(201, "approved"), (422, "policy_denied")}, outcomes
    allowed = outcomes[(201, "approved")]
    assert allowed * AMOUNT <= LIMIT
    # Serialised check-and-reserve fills the window exactly: equal amounts, no lost slot.
    assert allowed * AMOUNT == LIMIT
    with runtime.db.read() as uow:
        session = uow.session
        from sqlalchemy import func, select

        from walletsvc.db.models import Withdrawal

        held = session.scalar(select(func.coalesce(func.sum(Withdrawal.amount_sat), 0)))
    assert held == LIMIT
