"""The theft shield's reaction time: from a thief's transaction entering the mempool to our
replacement to cold storage in the mempool in its place.

Set-up: a fresh data directory, SQLite (or ``--database-url`` for PostgreSQL), the embedded
chain, a funded wallet with a cold destination, and the service's mempool watcher running on
its own thread exactly as ``walletsvc serve`` runs it. Each round a thief signs, with the
wallet's own seed, a spend of one hot coin and broadcasts it; the clock runs from just before
that broadcast until the shield's alert hook fires (called after our answer was accepted by
the mempool). Then a block resolves the incident and the next round uses another coin.

Baseline beside it: the broadcast of the thief's own transaction (the embedded mempool's
acceptance, with the kernel's script check), the floor any answer pays once more.

Run: ``.venv/bin/python bench/bench_shield.py [--rounds 10]``. Prints figures only; tests
assert no timings. Figures: docs/performance.md, "Theft shield".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from embit import bip32
from embit.networks import NETWORKS

from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.devchain.service import open_dev_chain
from walletsvc.domain.address import p2wpkh_script
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.incident.shield import TheftAlert, shield_incidents
from walletsvc.payouts.signing import seeds_for, spendable_coins
from walletsvc.treasury.cold import set_initial_cold_destination
from walletsvc.wallets.service import current_address, get_wallet

WALLET = "bench-hot"
THIEF_SCRIPT = p2wpkh_script(b"\x77" * 20)
POOL_SCRIPT = p2wpkh_script(b"\x66" * 20)
REPO = Path(__file__).resolve().parents[1]
ALERT_DEADLINE_S = 60.0  # a round that takes longer is reported as a failure, not waited on


def build(data_dir: Path, database_url: str | None) -> Runtime:
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url or "",
        kek_file=data_dir / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
        auto_sweep=False,
    )
    initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="bench")
    runtime = Runtime.open(settings, chain=open_dev_chain(settings))
    cold = bip32.HDKey.from_seed(os.urandom(32)).derive("m/84h/1h/0h").to_public()
    set_initial_cold_destination(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        text=cold.to_base58(NETWORKS["regtest"]["xpub"]),
        actor="bench",
    )
    with runtime.db.read() as uow:
        address = current_address(uow, get_wallet(uow, WALLET))
    runtime.chain.mine(130, bytes.fromhex(address.script_pubkey))  # type: ignore[attr-defined]
    runtime.scanner.sync()
    return runtime


def sign_theft(runtime: Runtime, coin: Coin, fee_sat: int = 500) -> bytes:
    amount = coin.amount_sat - fee_sat
    plan = TransactionPlan(
        inputs=(coin,),
        outputs=(PlannedOutput(THIEF_SCRIPT, amount, OutputPurpose.PAYOUT, "loot"),),
        fee_sat=fee_sat,
    )
    with runtime.db.read() as uow:
        wallet = get_wallet(uow, WALLET)
        signed = runtime.signer.sign(
            wallet=WALLET,
            network=Network.REGTEST,
            seeds=seeds_for(uow, wallet, plan),
            plan=plan,
            approved=[ApprovedPayout("loot", THIEF_SCRIPT, amount)],
            max_fee_sat=coin.amount_sat,
        )
    return signed.raw


def a_free_coin(runtime: Runtime) -> Coin:
    with runtime.db.read() as uow:
        return spendable_coins(uow, get_wallet(uow, WALLET))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        runtime = build(Path(tmp) / "data", args.database_url)
        assert runtime.mempool_watcher is not None
        answered = threading.Event()
        runtime.shield.alert_hooks.append(lambda alert: answered.set())
        outcomes: list[TheftAlert] = []
        runtime.shield.alert_hooks.append(outcomes.append)
        runtime.mempool_watcher.start(poll_interval_s=runtime.settings.mempool_poll_interval_s)
        reaction_ms: list[float] = []
        baseline_ms: list[float] = []
        try:
            for _ in range(args.rounds):
                raw = sign_theft(runtime, a_free_coin(runtime))
                answered.clear()
                started = time.perf_counter()
                runtime.chain.broadcast(raw)
                broadcast_done = time.perf_counter()
                if not answered.wait(ALERT_DEADLINE_S):
                    print("a round was not answered within the deadline")
                    break
                reaction_ms.append((time.perf_counter() - started) * 1000)
                baseline_ms.append((broadcast_done - started) * 1000)
                runtime.chain.mine(1, POOL_SCRIPT)  # type: ignore[attr-defined]
                runtime.scanner.sync()
            report = shield_incidents(runtime.db)["incidents"]
        finally:
            runtime.close()
        recorded_ms = [r["answered_in_ms"] for i in report for r in i["rounds"]]
        backend = "PostgreSQL" if args.database_url else "SQLite"
        print(f"theft shield reaction, embedded chain, {backend}, {platform.processor() or '?'}")
        print(f"rounds answered: {len(reaction_ms)} of {args.rounds}")
        if reaction_ms:
            print(
                "  thief broadcast -> our answer in the mempool: "
                f"median {statistics.median(reaction_ms):.1f} ms, max {max(reaction_ms):.1f} ms"
            )
            print(
                "  baseline, the thief's own broadcast (mempool acceptance): "
                f"median {statistics.median(baseline_ms):.1f} ms, max {max(baseline_ms):.1f} ms"
            )
            print(
                "  recorded by the shield, notification -> answer signed and stored: "
                f"median {statistics.median(recorded_ms):.0f} ms, max {max(recorded_ms)} ms"
            )
            print(
                f"  outcomes: {sorted({o.outcome for o in outcomes})}, incidents: "
                f"{sorted({i['status'] for i in report})}"
            )


if __name__ == "__main__":
    main()
