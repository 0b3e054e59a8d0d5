"""What the signer's socket adds: the round trip of a request over the Unix socket, and of a
1,000-input x 1,000-output plan (JSON encoding, the socket, the signer's parsing and request
digest) next to the same encoding and parsing in-process.

The plan is refused at the signer's freeze check, after parsing and hashing and before any
signing, so the figure is the transport's share alone; bench/bench_signing.py measures the
signing itself. Run: ``.venv/bin/python bench/bench_signer_socket.py``. Prints figures only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from walletsvc.config import Settings
from walletsvc.domain.canonical import content_digest
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.shipped import development_policy_file
from walletsvc.signer import wire
from walletsvc.signer.client import SignerClient
from walletsvc.signer.server import SignerServer

N = 1_000
REPEATS = 7
WALLET = "bench"


def plan_of(n: int) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    inputs = tuple(Coin(f"{i:064x}", 0, 100_000, bytes(22), KeyPath(1, 0, i), 6) for i in range(n))
    approved = [
        ApprovedPayout(f"w{i}", bytes([0, 20]) + i.to_bytes(20, "big"), 90_000) for i in range(n)
    ]
    outputs = tuple(
        PlannedOutput(a.script_pubkey, a.amount_sat, OutputPurpose.PAYOUT, a.withdrawal_id)
        for a in approved
    )
    return TransactionPlan(inputs, outputs, fee_sat=n * 10_000), approved


def median_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    logging.getLogger("walletsvc.signer").setLevel(logging.ERROR)  # its refusals are expected
    plan, approved = plan_of(N)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), policy_file=development_policy_file())
        with SignerServer(settings):
            client = SignerClient(settings)
            client.freeze(WALLET, "bench: refuse after parsing")

            def over_socket() -> None:
                with contextlib.suppress(SigningRefused):
                    client.sign(wallet=WALLET, kind="payout", plan=plan, approved=approved)

            def in_process() -> None:
                params = {
                    "plan": wire.encode_plan(plan),
                    "approved": [wire.encode_approved(a) for a in approved],
                }
                decoded = json.loads(json.dumps(params))
                wire.decode_plan(decoded["plan"])
                [wire.decode_approved(a) for a in decoded["approved"]]
                content_digest(decoded)

            status = median_ms(client.status, repeats=200)
            socket_ms = median_ms(over_socket)
            local_ms = median_ms(in_process)
            client.close()
    print(f"signer socket round trip, status request:          {status:8.3f} ms (median of 200)")
    print(f"{N}x{N} plan over the socket (encode, send, parse): {socket_ms:8.1f} ms (median)")
    print(f"{N}x{N} plan encoded and parsed in-process:         {local_ms:8.1f} ms (baseline)")
    print(f"the socket's share of a {N}x{N} batch:              {socket_ms - local_ms:8.1f} ms")


if __name__ == "__main__":
    main()
