"""What the signer's socket adds to a 1,000-input x 1,000-output batch, side by side with the
JSON-objects encoding it replaced.

* ``round trip``: ``SignerClient.sign`` over the Unix socket, wall clock: the client packs the
  batch, the signer reads it, unpacks it, takes its request digest, anchors nothing (no head
  given) and refuses at its freeze check, before any signing; the answer comes back. This is
  the whole cost of the separate process per batch (bench/bench_signing.py measures signing).
* ``codec``: the same encoding, parsing and request digest in-process, without the socket;
  the difference is the socket's own share.
* ``JSON objects (before)``: the codec the wire used before the packed batch (one JSON object
  per input, output and payout; re-encoded as canonical JSON for the digest), in-process.

Run: ``.venv/bin/python bench/bench_signer_socket.py``. Prints figures only; the table is in
docs/performance.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walletsvc.config import Settings
from walletsvc.domain.canonical import content_digest
from walletsvc.domain.errors import Frozen
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
REPEATS = 31
WALLET = "bench"


def plan_of(n: int) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    inputs = tuple(Coin(f"{i:064x}", 0, 100_000, bytes(22), KeyPath(1, 0, i), 6) for i in range(n))
    approved = [
        ApprovedPayout(f"w{i:06d}-{i:030x}", bytes([0, 20]) + i.to_bytes(20, "big"), 90_000)
        for i in range(n)
    ]
    outputs = tuple(
        PlannedOutput(a.script_pubkey, a.amount_sat, OutputPurpose.PAYOUT, a.withdrawal_id)
        for a in approved
    )
    return TransactionPlan(inputs, outputs, fee_sat=n * 10_000), approved


@dataclass(frozen=True)
class Figure:
    wall_ms: float  # median wall clock
    best_ms: float  # fastest wall clock: the figure least disturbed by other processes
    cpu_ms: float  # median CPU time of this process (client and server threads together)

    def row(self, label: str) -> str:
        return f"  {label:44s} {self.wall_ms:7.2f} {self.best_ms:7.2f} {self.cpu_ms:7.2f}"


def measure(fn: Callable[[], object], repeats: int = REPEATS) -> Figure:
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - start) * 1000)
    return Figure(statistics.median(walls), min(walls), statistics.median(cpus))


# -- the JSON-objects codec of the wire before the packed batch (for comparison only) ---------


def _path(path: KeyPath | None) -> list[int] | None:
    return None if path is None else [path.epoch, path.chain, path.index]


def json_objects_params(plan: TransactionPlan, approved: list[ApprovedPayout]) -> dict[str, Any]:
    return {
        "plan": {
            "inputs": [
                {
                    "txid": c.txid,
                    "vout": c.vout,
                    "amount_sat": c.amount_sat,
                    "script_pubkey": bytes(c.script_pubkey).hex(),
                    "key_path": _path(c.key_path),
                    "confirmations": c.confirmations,
                    "is_coinbase": c.is_coinbase,
                }
                for c in plan.inputs
            ],
            "outputs": [
                {
                    "script_pubkey": bytes(o.script_pubkey).hex(),
                    "amount_sat": o.amount_sat,
                    "purpose": o.purpose.value,
                    "withdrawal_id": o.withdrawal_id,
                    "key_path": _path(o.key_path),
                }
                for o in plan.outputs
            ],
            "fee_sat": plan.fee_sat,
        },
        "approved": [
            {
                "withdrawal_id": a.withdrawal_id,
                "script_pubkey": bytes(a.script_pubkey).hex(),
                "amount_sat": a.amount_sat,
            }
            for a in approved
        ],
    }


def json_objects_codec(plan: TransactionPlan, approved: list[ApprovedPayout]) -> None:
    line = json.dumps({"id": "x", "op": "sign", "params": json_objects_params(plan, approved)})
    params = json.loads(line)["params"]
    coins = [
        Coin(
            c["txid"],
            c["vout"],
            c["amount_sat"],
            bytes.fromhex(c["script_pubkey"]),
            KeyPath(*c["key_path"]),
            c["confirmations"],
            c["is_coinbase"],
        )
        for c in params["plan"]["inputs"]
    ]
    outputs = [
        PlannedOutput(
            bytes.fromhex(o["script_pubkey"]),
            o["amount_sat"],
            OutputPurpose(o["purpose"]),
            o["withdrawal_id"],
            None if o["key_path"] is None else KeyPath(*o["key_path"]),
        )
        for o in params["plan"]["outputs"]
    ]
    payouts = [
        ApprovedPayout(a["withdrawal_id"], bytes.fromhex(a["script_pubkey"]), a["amount_sat"])
        for a in params["approved"]
    ]
    again = TransactionPlan(tuple(coins), tuple(outputs), params["plan"]["fee_sat"])
    content_digest(json_objects_params(again, payouts))  # the request digest re-encoded


def packed_codec(plan: TransactionPlan, approved: list[ApprovedPayout]) -> None:
    batch = wire.pack_batch(plan, approved)
    params = {"wallet": WALLET, "kind": "payout"}
    line = json.dumps({"id": "x", "op": "sign", "params": params, "attachment": len(batch)})
    json.loads(line)
    _, _, data = wire.decode_batch(bytes(batch))
    hashlib.sha256(data).hexdigest()


def main() -> None:
    logging.getLogger("walletsvc.signer").setLevel(logging.ERROR)  # its refusals are expected
    plan, approved = plan_of(N)
    size = len(wire.pack_batch(plan, approved))
    json_size = len(json.dumps(json_objects_params(plan, approved)))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), policy_file=development_policy_file())
        with SignerServer(settings):
            client = SignerClient(settings)
            client.freeze(WALLET, "bench: refuse after parsing")

            def over_socket() -> None:
                with contextlib.suppress(Frozen):
                    client.sign(wallet=WALLET, kind="payout", plan=plan, approved=approved)

            status = measure(client.status, repeats=200)
            socket = measure(over_socket)
            client.close()
    packed = measure(lambda: packed_codec(plan, approved))
    before = measure(lambda: json_objects_codec(plan, approved))
    print(f"{N}x{N} batch, {REPEATS} runs (status: 200)      wall ms  best ms  CPU ms")
    print(status.row("status request over the socket"))
    print(socket.row("batch round trip over the socket (packed)"))
    print(packed.row("packed codec in-process"))
    print(before.row("JSON objects codec in-process (before)"))
    share = socket.best_ms - packed.best_ms
    print(f"  the socket's own share (round trip - codec, best): {share:.2f} ms")
    print(f"  bytes on the wire: packed {size:,}, JSON objects {json_size:,}")


if __name__ == "__main__":
    main()
