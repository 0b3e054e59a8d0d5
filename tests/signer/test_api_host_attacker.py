"""An attacker with the API process: it speaks to the signer's socket itself.

It can send anything a request can carry: withdrawal ids the service never issued, amounts
and destinations of its choosing, replays, a policy of its own. The signer decides from its
own ledger and its own copy of the policy (policies/default.yaml here, with a denylist), so
the most it signs is the velocity budget, and nothing twice.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from embit import script

from tests.conftest import REPO, WALLET
from tests.helpers import external_destination
from tests.signer.helpers import coins, funded_api_host, payout, plan_paying, plan_sweep_to
from tests.signer_helpers import install_cold_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import Frozen, InvalidInput, SigningRefused
from walletsvc.domain.transaction import ApprovedPayout
from walletsvc.domain.txplan import plan_sweep
from walletsvc.signer.client import SignerClient
from walletsvc.wallets.service import get_wallet, next_change_path

DENIED_ADDRESS, DENIED_SCRIPT = external_destination("known thief")
HOUR_BUDGET_SAT = 200_000_000  # policies/default.yaml, velocity wallet-1h
TIER_SAT = 10_000_000  # the largest payout that needs no approval in that policy


@pytest.fixture
def api_host(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """A funded service whose signer's first policy denies DENIED_ADDRESS."""
    text = (REPO / "policies" / "default.yaml").read_text()
    policy_text = text.replace("denylist: []", f"denylist: [{DENIED_ADDRESS}]")
    with funded_api_host(tmp_path, database_url, policy_text) as runtime:
        yield runtime


def signed_count(runtime: Runtime) -> int:
    return int(runtime.signer.status()["signed_transactions"])


def test_an_amount_above_the_per_payout_maximum_is_refused(api_host: Runtime) -> None:
    plan = plan_paying(api_host, [too_big := payout("w-big", 50_000_001)], using=coins(api_host))
    with pytest.raises(SigningRefused, match="max_per_payout"):
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=[too_big])
    assert signed_count(api_host) == 0


def test_a_denylisted_destination_is_refused(api_host: Runtime) -> None:
    to_thief = ApprovedPayout("w-thief", DENIED_SCRIPT, 1_000_000)
    plan = plan_paying(api_host, [to_thief], using=coins(api_host))
    with pytest.raises(SigningRefused, match="denylist"):
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=[to_thief])
    assert signed_count(api_host) == 0


def test_the_most_it_signs_in_one_window_is_the_velocity_budget(api_host: Runtime) -> None:
    """Invented withdrawal ids, each at the largest amount without approvals, to fresh
    addresses: exactly the wallet's hourly budget goes out, not a satoshi more."""
    available = coins(api_host)
    budget_count = HOUR_BUDGET_SAT // TIER_SAT
    over = [payout(f"w-{i}", TIER_SAT) for i in range(budget_count + 1)]
    plan = plan_paying(api_host, over, using=available[:2])
    with pytest.raises(SigningRefused, match=r"velocity\.wallet-1h"):
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=over)

    signed_sat = 0
    for start in range(0, budget_count, 5):  # four batches of five
        batch = over[start : start + 5]
        plan = plan_paying(api_host, batch, using=[available[start // 5]])
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=batch)
        signed_sat += sum(p.amount_sat for p in batch)
    assert signed_sat == HOUR_BUDGET_SAT

    one_more = [payout("w-one-more", 1_000)]
    plan = plan_paying(api_host, one_more, using=[available[5]])
    with pytest.raises(SigningRefused, match=r"velocity\.wallet-1h"):
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=one_more)
    assert signed_count(api_host) == 4


def test_a_replayed_request_gets_the_same_bytes_and_pays_once(api_host: Runtime) -> None:
    paid = [payout("w-replay", 2_000_000)]
    plan = plan_paying(api_host, paid, using=coins(api_host)[:1])
    first = api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)
    again = api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)
    assert again == first
    assert signed_count(api_host) == 1


def test_a_withdrawal_signed_before_is_never_signed_in_another_transaction(
    api_host: Runtime,
) -> None:
    available = coins(api_host)
    paid = [payout("w-once", 2_000_000)]
    api_host.signer.sign(
        wallet=WALLET,
        kind="payout",
        plan=plan_paying(api_host, paid, using=available[:1]),
        approved=paid,
    )
    with pytest.raises(SigningRefused, match="never twice"):
        api_host.signer.sign(
            wallet=WALLET,
            kind="payout",
            plan=plan_paying(api_host, paid, using=available[1:2]),  # other coins: a 2nd payment
            approved=paid,
        )
    assert signed_count(api_host) == 1


def test_coins_spent_before_are_never_spent_on_another_payout(api_host: Runtime) -> None:
    coin = coins(api_host)[:1]
    first, second = [payout("w-a", 2_000_000)], [payout("w-b", 2_000_000)]
    api_host.signer.sign(
        wallet=WALLET, kind="payout", plan=plan_paying(api_host, first, using=coin), approved=first
    )
    with pytest.raises(SigningRefused, match="already spent"):
        api_host.signer.sign(
            wallet=WALLET,
            kind="payout",
            plan=plan_paying(api_host, second, using=coin),
            approved=second,
        )


def test_a_fee_bump_of_its_own_transaction_is_signed(api_host: Runtime) -> None:
    """The one way to sign a withdrawal again: replace the transaction that paid it, paying
    exactly the same withdrawals from at least one of the same coins."""
    coin = coins(api_host)[:1]
    paid = [payout("w-bump", 2_000_000)]
    slow = api_host.signer.sign(
        wallet=WALLET, kind="payout", plan=plan_paying(api_host, paid, using=coin), approved=paid
    )
    fast = api_host.signer.sign(
        wallet=WALLET,
        kind="fee_bump",
        plan=plan_paying(api_host, paid, using=coin, fee_rate=20),
        approved=paid,
    )
    assert fast.txid != slow.txid and fast.fee_sat > slow.fee_sat
    # ...and the replacement did not count against the budget a second time.
    assert signed_count(api_host) == 2


def test_a_frozen_signer_refuses_whatever_the_database_says(api_host: Runtime) -> None:
    api_host.signer.freeze(WALLET, "incident 42")
    paid = [payout("w-frozen", 1_000_000)]
    plan = plan_paying(api_host, paid, using=coins(api_host)[:1])
    with pytest.raises(Frozen, match="frozen in the signer: incident 42"):
        api_host.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)
    with api_host.db.read() as uow:
        assert uow.freezes.active(None) == []  # the database knows nothing of it


def test_a_forged_policy_or_unknown_operation_is_refused(api_host: Runtime) -> None:
    client = SignerClient(api_host.settings)
    before = client.status()
    loose = {"version": 1, "max_per_payout_sat": 2_100_000_000_000_000}
    for op in ("install_policy", "policy", "set_policy", "init"):
        with pytest.raises(InvalidInput, match="unknown operation"):
            client.call(op, {"document": loose})
    assert client.status()["policy_hash"] == before["policy_hash"]
    assert client.status()["records"] == before["records"]
    client.close()


def test_malformed_requests_on_the_raw_socket_are_answered_and_change_nothing(
    api_host: Runtime,
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(api_host.settings.signer_socket))
    stream = sock.makefile("rwb")
    replies = []
    for line in (
        b"not json\n",
        b"[1, 2]\n",
        json.dumps({"op": "status"}).encode() + b"\n",  # no id
        json.dumps({"id": "x", "op": "sign", "params": {"wallet": WALLET}}).encode() + b"\n",
        json.dumps(
            {"id": "y", "op": "sign", "params": {"wallet": WALLET, "kind": "payout", "plan": {}}}
        ).encode()
        + b"\n",
    ):
        stream.write(line)
        stream.flush()
        replies.append(json.loads(stream.readline()))
    sock.close()
    assert [r["ok"] for r in replies] == [False] * 5
    assert {r["error"]["code"] for r in replies} == {"invalid_request"}
    assert signed_count(api_host) == 0


def cold_destination() -> tuple[str, bytes]:
    """The wallet's cold account (tests.treasury.test_sweeps) and its first address' script."""
    from embit.networks import NETWORKS

    from tests.treasury.test_sweeps import cold_account

    account = cold_account()
    tpub = account.to_base58(NETWORKS["regtest"]["xpub"])
    return tpub, bytes(script.p2wpkh(account.derive([0, 0]).key).data)


def test_a_sweep_to_anywhere_but_the_signers_cold_destination_is_refused(
    api_host: Runtime,
) -> None:
    """A "sweep" is exempt from velocity and freezes, so "cold" must be the signer's own."""
    thief = external_destination("thief's cold wallet")[1]
    plan = plan_sweep_to(api_host, thief, using=coins(api_host)[:3])
    with pytest.raises(SigningRefused, match="no cold destination in the signer"):
        api_host.signer.sign(
            wallet=WALLET, kind="sweep", plan=plan, approved=[], sweep_scripts=frozenset({thief})
        )
    tpub, _ = cold_destination()
    install_cold_in_signer(api_host.settings, WALLET, tpub)
    with pytest.raises(SigningRefused, match="not an address of the signer's cold destination"):
        api_host.signer.sign(
            wallet=WALLET, kind="sweep", plan=plan, approved=[], sweep_scripts=frozenset({thief})
        )
    assert signed_count(api_host) == 0


def test_a_frozen_signer_still_sweeps_to_its_cold_destination(api_host: Runtime) -> None:
    tpub, cold_script = cold_destination()
    install_cold_in_signer(api_host.settings, WALLET, tpub)
    api_host.signer.freeze(None, "everything stops")
    plan = plan_sweep_to(api_host, cold_script, using=coins(api_host)[:3])
    signed = api_host.signer.sign(
        wallet=WALLET, kind="sweep", plan=plan, approved=[], sweep_scripts=frozenset({cold_script})
    )
    assert signed.fee_sat > 0 and signed_count(api_host) == 1


def test_only_a_shield_answer_to_cold_may_pay_the_shield_budget_in_fees(
    api_host: Runtime,
) -> None:
    """The theft shield outbids a thief with fees above the configured cap: the signer lets
    that through only for kind "shield", only to its own cold destination, and only up to the
    shield budget of its own policy copy (50 % of the coins spent by default). The service
    asking for a higher cap changes nothing."""
    tpub, cold_script = cold_destination()
    install_cold_in_signer(api_host.settings, WALLET, tpub)
    coin = coins(api_host)[0]
    cap = api_host.settings.max_fee_sat
    with api_host.db.write() as uow:
        change_path, change_script = next_change_path(uow, get_wallet(uow, WALLET))
    plan = plan_sweep(
        [coin],
        destination_script=cold_script,
        keep_sat=None,
        fee_rate_sat_per_vb=(cap * 3) // 100,  # about 3x the cap for a 1-in 1-out spend
        max_fee_sat=coin.amount_sat,
        change_script=change_script,
        change_path=change_path,
        min_confirmations=1,
    )
    assert cap < plan.fee_sat < coin.amount_sat // 2
    asked = coin.amount_sat  # the API host asks for everything
    with pytest.raises(SigningRefused, match="exceeds the cap"):
        api_host.signer.sign(
            wallet=WALLET,
            kind="sweep",
            plan=plan,
            approved=[],
            sweep_scripts=frozenset({cold_script}),
            max_fee_sat=asked,
        )
    signed = api_host.signer.sign(
        wallet=WALLET,
        kind="shield",
        plan=plan,
        approved=[],
        sweep_scripts=frozenset({cold_script}),
        max_fee_sat=asked,
    )
    assert signed.fee_sat == plan.fee_sat > cap
    # The service may lower the cap, never raise it past the signer's own.
    with pytest.raises(SigningRefused, match="exceeds the cap"):
        api_host.signer.sign(
            wallet=WALLET,
            kind="shield",
            plan=plan,
            approved=[],
            sweep_scripts=frozenset({cold_script}),
            max_fee_sat=cap,
        )
    assert signed_count(api_host) == 1
