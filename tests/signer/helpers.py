"""Building what an attacker on the API host would send the signer: real plans of our coins."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from tests.conftest import RUNNING_SIGNERS, WALLET, fund_wallet
from tests.fakechain import FakeChain
from tests.helpers import external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.domain.transaction import ApprovedPayout, Coin, TransactionPlan
from walletsvc.domain.txplan import plan_payouts, plan_sweep
from walletsvc.payouts.signing import spendable_coins
from walletsvc.signer.server import SignerServer
from walletsvc.wallets.service import get_wallet, next_change_path


@contextlib.contextmanager
def funded_api_host(
    tmp_path: Path,
    database_url: str,
    policy_text: str,
    *,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[Runtime]:
    """A funded service (worker off) and its signer on a real socket, whose first policy is
    ``policy_text``; ``clock``, when given, is the signer's (the test moves its time)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        kek_file=tmp_path / "data" / "kek.bin",
        policy_file=policy,
        run_worker=False,
    )
    with SignerServer(settings) as signer:
        if clock is not None:
            signer.core._clock = clock
        RUNNING_SIGNERS[settings.signer_path] = signer
        initialise(settings, wallet=WALLET, policy_file=policy, actor="test")
        runtime = Runtime.open(settings, chain=FakeChain())
        try:
            fund_wallet(runtime)
            yield runtime
        finally:
            runtime.close()
            RUNNING_SIGNERS.pop(settings.signer_path, None)


def payout(withdrawal_id: str, amount_sat: int, tag: str | None = None) -> ApprovedPayout:
    """A payout to a destination that is not ours, under any withdrawal id we like."""
    return ApprovedPayout(withdrawal_id, external_destination(tag or withdrawal_id)[1], amount_sat)


def coins(runtime: Runtime) -> list[Coin]:
    with runtime.db.read() as uow:
        return spendable_coins(uow, get_wallet(uow, WALLET))


def plan_paying(
    runtime: Runtime,
    payouts: Sequence[ApprovedPayout],
    *,
    using: Sequence[Coin],
    fee_rate: int = 2,
) -> TransactionPlan:
    """A valid plan paying ``payouts`` from ``using``, with change to a fresh key of ours."""
    with runtime.db.write() as uow:
        change_path, change_script = next_change_path(uow, get_wallet(uow, WALLET))
    return plan_payouts(
        using,
        payouts,
        change_script=change_script,
        change_path=change_path,
        fee_rate_sat_per_vb=fee_rate,
        max_fee_sat=runtime.settings.max_fee_sat,
        min_confirmations=1,
    )


def plan_sweep_to(runtime: Runtime, script: bytes, *, using: Sequence[Coin]) -> TransactionPlan:
    """Everything in ``using`` to ``script``, as a sweep to cold storage is planned."""
    with runtime.db.write() as uow:
        change_path, change_script = next_change_path(uow, get_wallet(uow, WALLET))
    return plan_sweep(
        using,
        destination_script=script,
        keep_sat=None,
        fee_rate_sat_per_vb=2,
        max_fee_sat=runtime.settings.max_fee_sat,
        change_script=change_script,
        change_path=change_path,
        min_confirmations=1,
    )
