"""The intake's indexed velocity totals equal the list path's, over random histories in the
real database (SQLite, and PostgreSQL when configured): same totals, same decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import WALLET
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Withdrawal
from walletsvc.domain.withdrawal import HOLDING_STATUSES, WithdrawalStatus
from walletsvc.payouts.intake import _history
from walletsvc.policy import (
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    PolicyDocument,
    evaluate,
    held_totals,
    parse_policy,
)
from walletsvc.wallets.service import get_wallet

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DESTS = ["bcrt1qaaa", "bcrt1qbbb", "bcrt1qccc"]
TOKENS = ["tok-1", "tok-2", None]
WINDOWS = [60, 600, 3600, 86400]
ROUNDS = 12


def _random_policy(rnd: random.Random) -> PolicyDocument:
    limits: list[dict[str, Any]] = [
        {
            "id": f"v{i}",
            "window": rnd.choice(WINDOWS),
            "scope": rnd.choice(["wallet", "destination", "token"]),
            "max_amount_sat": rnd.randint(0, 400_000),
            "max_count": rnd.randint(0, 40),
        }
        for i in range(rnd.randint(1, 4))
    ]
    document: dict[str, Any] = {
        "version": 1,
        "velocity": limits,
        "governance": {
            action: {"group": "treasury", "m": 2}
            for action in (
                "allowlist_add",
                "policy_change",
                "unfreeze",
                "key_rotation",
                "cold_destination_change",
            )
        },
    }
    if rnd.random() < 0.5:
        document["allowlist"] = {
            "required": False,
            "trust_ramp": {"initial_max_sat": 10_000, "doubling_period": rnd.choice(WINDOWS)},
        }
    return parse_policy(document)


def _add_random_payouts(runtime: Runtime, wallet_id: str, rnd: random.Random) -> None:
    statuses = [s.value for s in WithdrawalStatus]
    with runtime.db.write() as uow:
        for _ in range(rnd.randint(0, 15)):
            # Around every window's edge, exactly on it, beyond it and in the future.
            ago = rnd.choice([*WINDOWS, *(w + 1 for w in WINDOWS), rnd.randint(-120, 90_000)])
            uow.withdrawals.add(
                Withdrawal(
                    wallet_id=wallet_id,
                    token_id=rnd.choice(TOKENS),
                    destination=rnd.choice(DESTS),
                    script_pubkey="00",
                    amount_sat=rnd.randint(1, 50_000),
                    status=rnd.choice(statuses),
                    decision={"outcome": "allow", "rules": [], "required": None},
                    policy_hash="0" * 64,
                    created_at=NOW - timedelta(seconds=ago),
                    updated_at=NOW,
                )
            )


def test_indexed_totals_decide_as_the_held_list(runtime: Runtime) -> None:
    rnd = random.Random(20261129)
    held = [s.value for s in HOLDING_STATUSES]
    with runtime.db.read() as uow:
        wallet_id = get_wallet(uow, WALLET).id
    counted = 0
    for _ in range(ROUNDS):
        _add_random_payouts(runtime, wallet_id, rnd)
        policy = _random_policy(rnd)
        request = PayoutRequest(
            WALLET, rnd.choice(DESTS), rnd.randint(1, 60_000), rnd.choice(TOKENS)
        )
        with runtime.db.read() as uow:
            wallet = get_wallet(uow, WALLET)
            rows = uow.withdrawals.held_since(wallet.id, NOW - timedelta(days=2), held)
            by_totals = _history(
                uow, wallet, request.destination, request.token_id, policy, NOW, None
            )
        everything = tuple(HeldPayout(a, d, t, c) for a, d, t, c in rows)
        assert by_totals.velocity_totals is not None
        assert by_totals.velocity_totals == held_totals(request, everything, policy, NOW)
        counted += sum(total.count for total in by_totals.velocity_totals)
        by_list = HistorySnapshot(everything)
        assert evaluate(request, by_totals, policy, NOW) == evaluate(request, by_list, policy, NOW)
    assert counted > 0  # the histories did fall inside the windows
