"""Key-layer throughput on this machine: xpub address derivation and 1000x1000 signing.

Run: .venv/bin/python bench/bench_keys.py. Prints figures only; tests assert no timings.
"""

from __future__ import annotations

import hashlib
import os
import time

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SpentOutput
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.keys import AccountXpub, HotSigner, Kek, generate_seed


class _NoVerify:
    """Skips the kernel so signing time can be measured on its own (bench only)."""

    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        return None


def _rate(label: str, fn: object, n: int) -> None:
    start = time.perf_counter()
    for i in range(n):
        fn(i % 2, i)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    print(f"{label:<28} {n / elapsed:>10,.0f} /s")


def main() -> None:
    kek = Kek(os.urandom(32))
    net = Network.REGTEST
    new = generate_seed(kek, wallet="bench", epoch=1, network=net)
    new.mnemonic.reveal()
    xpub = AccountXpub.parse(new.account_xpub, net)

    n = 20_000
    _rate("address() (bech32)", xpub.address, n)
    _rate("script_pubkey()", xpub.script_pubkey, n)
    _rate("pubkey()", xpub.pubkey, n)

    size = 1000
    coins = tuple(
        Coin(
            hashlib.sha256(b"%d" % i).hexdigest(),
            i % 3,
            100_000 + i,
            xpub.script_pubkey(0, i),
            KeyPath(1, 0, i),
            6,
        )
        for i in range(size)
    )
    outputs, approved = [], []
    for j in range(size - 1):
        script = b"\x00\x14" + hashlib.sha256(b"dest%d" % j).digest()[:20]
        outputs.append(PlannedOutput(script, 50_000 + j, OutputPurpose.PAYOUT, f"w{j}"))
        approved.append(ApprovedPayout(f"w{j}", script, 50_000 + j))
    fee = 150_000
    change = sum(c.amount_sat for c in coins) - sum(o.amount_sat for o in outputs) - fee
    outputs.append(
        PlannedOutput(
            xpub.script_pubkey(1, 0), change, OutputPurpose.CHANGE, key_path=KeyPath(1, 1, 0)
        )
    )
    plan = TransactionPlan(coins, tuple(outputs), fee)
    kwargs = dict(
        wallet="bench",
        network=net,
        seeds={1: new.encrypted},
        plan=plan,
        approved=approved,
        max_fee_sat=10**6,
    )

    fast = HotSigner(kek, _NoVerify())
    times = []
    for _ in range(5):
        start = time.perf_counter()
        signed = fast.sign(**kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    print(
        f"sign {size}x{size} (no kernel)   best {min(times) * 1e3:7.1f} ms, "
        f"median {sorted(times)[2] * 1e3:7.1f} ms, vsize {signed.vsize}"
    )

    kernel = KernelScriptVerifier()
    spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in coins]
    start = time.perf_counter()
    kernel.verify_transaction(signed.raw, spent)
    print(f"kernel verify {size} inputs      {(time.perf_counter() - start) * 1e3:7.1f} ms")

    full = HotSigner(kek, kernel)
    start = time.perf_counter()
    full.sign(**kwargs)  # type: ignore[arg-type]
    print(f"sign {size}x{size} (with kernel) {(time.perf_counter() - start) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
