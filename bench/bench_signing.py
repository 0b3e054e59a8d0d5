"""Signing that scales: build, sign and kernel-verify P2WPKH transactions of n inputs x n
outputs with walletsvc's HotSigner, against the naive python-bitcoinlib path; the log-log
scaling exponent; addresses derived per second from an xpub.

Run: ``make bench`` (or ``.venv/bin/python bench/bench_signing.py``). Prints figures only;
tests assert no timings. Figures and how to read them: docs/performance.md.
(This folds in the former bench/bench_keys.py: same derivation and 1000x1000 measurements.)
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bitcoin.core import (
    CMutableTransaction,
    COutPoint,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    lx,
)
from bitcoin.core.script import (
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.wallet import CKey

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.domain.address import p2wpkh_script
from walletsvc.domain.hashes import hash160
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
from walletsvc.keys.hd import AccountKeys
from walletsvc.keys.keystore import decrypt_seed
from walletsvc.keys.sighash import p2wpkh_script_code

NET = Network.REGTEST
SIZES = (10, 100, 500, 1000, 2000)
REPORTED = (10, 100, 1000, 2000)
REPEATS = 5
# The targets are latencies (how long a payout waits for its signatures), so the headline is
# wall-clock time, best of REPEATS: the minimum filters out other processes on a shared
# machine. CPU time of this process (all threads) is printed beside it; the kernel check runs
# on a thread pool, so CPU time can exceed wall-clock time.
clock = time.perf_counter


@dataclass
class Wallet:
    kek: Kek
    seeds: dict[int, object]
    xpub: AccountXpub
    scripts: list[bytes]  # receive scripts 0..max-1 (derived once, outside the timings)
    secrets: list[bytes]  # their private keys, for the naive path only


def make_wallet(n_keys: int) -> Wallet:
    kek = Kek(os.urandom(32))
    new = generate_seed(kek.seed_vault(), wallet="bench", epoch=1, network=NET)
    new.mnemonic.reveal()
    xpub = AccountXpub.parse(new.account_xpub, NET)
    with decrypt_seed(
        kek.seed_vault(), new.encrypted, wallet="bench", epoch=1, network=NET
    ) as secret:
        account = AccountKeys(secret.seed, NET)
    keys = [account.key(0, i) for i in range(n_keys)]
    account.wipe()
    return Wallet(
        kek=kek,
        seeds={1: new.encrypted},
        xpub=xpub,
        scripts=[xpub.script_pubkey(0, i) for i in range(n_keys)],
        secrets=[k.private_key.secret for k in keys],
    )


def build_plan(wallet: Wallet, n: int) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    """n inputs (one per key) paying n-1 payouts and one change output."""
    coins = tuple(
        Coin(
            hashlib.sha256(b"%d" % i).hexdigest(),
            i % 3,
            1_000_000 + i,
            wallet.scripts[i],
            KeyPath(1, 0, i),
            6,
        )
        for i in range(n)
    )
    outputs, approved = [], []
    for j in range(n - 1):
        script = p2wpkh_script(hashlib.sha256(b"dest%d" % j).digest()[:20])
        outputs.append(PlannedOutput(script, 50_000 + j, OutputPurpose.PAYOUT, f"w{j}"))
        approved.append(ApprovedPayout(f"w{j}", script, 50_000 + j))
    fee = 200 * n
    change = sum(c.amount_sat for c in coins) - sum(o.amount_sat for o in outputs) - fee
    outputs.append(
        PlannedOutput(
            wallet.xpub.script_pubkey(1, 0), change, OutputPurpose.CHANGE, key_path=KeyPath(1, 1, 0)
        )
    )
    return TransactionPlan(coins, tuple(outputs), fee), approved


def fast_path(wallet: Wallet, signer: HotSigner, n: int) -> float:
    """Build the plan, sign (every check of the HotSigner) and kernel-verify; seconds."""
    start = clock()
    plan, approved = build_plan(wallet, n)
    signer.sign(
        wallet="bench",
        network=NET,
        seeds=wallet.seeds,  # type: ignore[arg-type]
        plan=plan,
        approved=approved,
        max_fee_sat=10**8,
    )
    return clock() - start


def fast_path_cpu(wallet: Wallet, signer: HotSigner, n: int) -> float:
    start = time.process_time()
    fast_path(wallet, signer, n)
    return time.process_time() - start


def naive_path(wallet: Wallet, kernel: KernelScriptVerifier, n: int) -> float:
    """python-bitcoinlib: SignatureHash per input (BIP143 hashes recomputed each time) and
    CKey.sign (OpenSSL), then the same kernel verification; seconds."""
    start = clock()
    plan, _ = build_plan(wallet, n)
    vin = [CTxIn(COutPoint(lx(c.txid), c.vout), nSequence=plan.sequence) for c in plan.inputs]
    vout = [CTxOut(o.amount_sat, CScript(o.script_pubkey)) for o in plan.outputs]
    tx = CMutableTransaction(vin, vout, nLockTime=plan.locktime, nVersion=plan.version)
    witnesses = []
    for i, coin in enumerate(plan.inputs):
        key = CKey(wallet.secrets[coin.key_path.index], compressed=True)
        pub = bytes(key.pub)
        code = CScript(p2wpkh_script_code(hash160(pub)))
        digest = SignatureHash(code, tx, i, SIGHASH_ALL, coin.amount_sat, SIGVERSION_WITNESS_V0)
        sig = key.sign(digest) + bytes([SIGHASH_ALL])
        witnesses.append(CTxInWitness(CScriptWitness([sig, pub])))
    tx.wit = CTxWitness(witnesses)
    raw = tx.serialize()
    kernel.verify_transaction(
        raw, [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    )
    return clock() - start


def kernel_only(wallet: Wallet, n: int) -> float:
    plan, approved = build_plan(wallet, n)
    signed = HotSigner(wallet.kek.seed_vault(), _NoVerify()).sign(
        wallet="bench",
        network=NET,
        seeds=wallet.seeds,  # type: ignore[arg-type]
        plan=plan,
        approved=approved,
        max_fee_sat=10**8,
    )
    spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    start = clock()
    KernelScriptVerifier().verify_transaction(signed.raw, spent)
    return clock() - start


class _NoVerify:
    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        return None


def best_of(fn: Callable[[], float], repeats: int = REPEATS) -> float:
    return min(fn() for _ in range(repeats))


def exponent(points: dict[int, float]) -> float:
    """Least-squares slope of log(time) against log(n)."""
    xs = [math.log(n) for n in points]
    ys = [math.log(t) for t in points.values()]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mx) ** 2 for x in xs)


def addresses_per_second(xpub: AccountXpub, n: int = 20_000) -> float:
    start = clock()
    for i in range(n):
        xpub.address(i % 2, i)
    return n / (clock() - start)


def main() -> None:
    print(
        f"walletsvc signing benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    wallet = make_wallet(max(SIZES))
    signer = HotSigner(wallet.kek.seed_vault(), KernelScriptVerifier())
    kernel = KernelScriptVerifier()
    fast_path(wallet, signer, 10)  # warm up (imports, kernel context)

    fast = {n: best_of(lambda n=n: fast_path(wallet, signer, n)) for n in SIZES}
    cpu = {n: best_of(lambda n=n: fast_path_cpu(wallet, signer, n)) for n in REPORTED}
    verify = {n: best_of(lambda n=n: kernel_only(wallet, n)) for n in REPORTED}
    naive = {n: naive_path(wallet, kernel, n) for n in REPORTED}

    print()
    print(
        "P2WPKH n inputs x n outputs: build + sign + libbitcoinkernel verify, wall-clock (best "
        f"of {REPEATS} for walletsvc, one run for the naive path); CPU time of all threads"
    )
    print(
        f"{'n x n':>12} {'walletsvc':>12} {'of which kernel':>16} {'naive':>12} {'ratio':>8}"
        f" {'walletsvc CPU':>14}"
    )
    for n in REPORTED:
        print(
            f"{f'{n}x{n}':>12} {fast[n] * 1e3:>9.1f} ms {verify[n] * 1e3:>13.1f} ms "
            f"{naive[n] * 1e3:>9.1f} ms {naive[n] / fast[n]:>7.1f}x {cpu[n] * 1e3:>11.1f} ms"
        )
    scaling = {n: fast[n] for n in (500, 1000, 2000)}
    print()
    print(f"scaling exponent 500..2000 (log-log slope): {exponent(scaling):.3f}  (target <= 1.15)")
    print(
        f"1000x1000 total: {fast[1000] * 1e3:.1f} ms  (target <= 150 ms); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rate = max(addresses_per_second(wallet.xpub) for _ in range(REPEATS))
    print(f"addresses derived per second from an xpub: {rate:,.0f}  (target >= 10,000)")


if __name__ == "__main__":
    main()
