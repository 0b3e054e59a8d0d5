"""A round decides each payout exactly as the same payouts requested one by one would be
decided: the running totals stand for the earlier payouts' rows, to the rule trace."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.conftest import WALLET, Tokens
from tests.helpers import external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import PolicyDenied
from walletsvc.domain.network import Network
from walletsvc.governance.policies import active_policy
from walletsvc.governance.tokens import authenticate_token
from walletsvc.payouts import rounds
from walletsvc.payouts.intake import WithdrawalInput, get_withdrawal, request_withdrawal
from walletsvc.wallets.service import get_wallet

MOMENT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _payouts() -> list[tuple[str, int]]:
    """40 payouts over 6 destinations: tiers, per-destination counts and amounts, and the
    wallet's 2 BTC an hour crossed halfway (policies/default.yaml)."""
    addresses = [external_destination(f"same-decision miner {i}")[0] for i in range(6)]
    made = []
    for i in range(40):
        amount = [3_000_000, 9_500_000, 12_000_000, 40_000_000, 700_000][i % 5] + i
        made.append((addresses[(i * 7) % 6], amount))
    return made


def test_a_round_decides_each_payout_as_single_requests_would(
    runtime: Runtime, tokens: Tokens
) -> None:
    payouts = _payouts()
    with runtime.db.read() as uow:
        token_id = authenticate_token(uow, runtime.tags, tokens.all).token_id
        wallet = get_wallet(uow, WALLET)
        policy = active_policy(uow, runtime.tags, wallet)
        addresses = [decode_address(a, Network.REGTEST).address for a, _ in payouts]
        in_round = rounds._decide_all(
            uow,
            runtime.tags,
            wallet,
            policy,
            addresses,
            [amount for _, amount in payouts],
            token_id,
            MOMENT,
        )

    one_by_one: list[dict[str, Any]] = []
    for i, (address, amount) in enumerate(payouts):
        try:
            result = request_withdrawal(
                runtime.db,
                runtime.tags,
                body=WithdrawalInput(WALLET, address, amount, None),
                idempotency_key=f"single-{i}",
                token_id=token_id,
                actor="test",
                now=MOMENT,
            )
        except PolicyDenied as denied:
            one_by_one.append(denied.decision.to_dict())
            continue
        with runtime.db.read() as uow:
            one_by_one.append(get_withdrawal(uow, result.withdrawal_id).decision)

    outcomes = [d["outcome"] for d in one_by_one]
    assert {"allow", "require_approval", "deny"} <= set(outcomes), "the case covers all three"
    assert [d.to_dict() for d in in_round] == one_by_one
