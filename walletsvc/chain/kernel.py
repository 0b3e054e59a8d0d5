"""The product's one use of py-bitcoinkernel (pbk, alpha: pinned in pyproject).

Every transaction we sign has its input scripts checked here by Bitcoin Core's consensus code,
in production too. (The dev chain's block validation and storage, the other use of pbk, lives
in walletsvc.devchain.kernel_chainstate.)
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pbk

from walletsvc.domain.errors import VerificationFailed
from walletsvc.domain.ports import SpentOutput


class KernelScriptVerifier:
    """Checks every input of a transaction with libbitcoinkernel and all script flags.

    Large transactions are checked on a small thread pool: the kernel releases the GIL while
    it verifies, and sharing one PrecomputedTransactionData between threads is what Bitcoin
    Core's own parallel script checks do (CCheckQueue in validation.cpp).
    """

    # Below this many inputs a pool costs more than it saves.
    PARALLEL_FROM_INPUTS = 64

    def __init__(self, threads: int | None = None) -> None:
        self._threads = max(1, min(threads or os.cpu_count() or 1, 8))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        try:
            tx = pbk.Transaction(raw_tx)
        except Exception as exc:
            raise VerificationFailed("transaction does not deserialise in the kernel") from exc
        n_inputs = len(tx.inputs)
        if n_inputs != len(spent_outputs):
            raise VerificationFailed(
                f"{n_inputs} inputs but {len(spent_outputs)} spent outputs were supplied"
            )
        scripts = [pbk.ScriptPubkey(bytes(o.script_pubkey)) for o in spent_outputs]
        kernel_outputs = [
            pbk.TransactionOutput(script, o.amount_sat)
            for script, o in zip(scripts, spent_outputs, strict=True)
        ]
        # One precomputed object per transaction (taproot needs every spent output).
        precomputed = pbk.script.PrecomputedTransactionData(tx, kernel_outputs)

        def check(indexes: range) -> None:
            for index in indexes:
                _verify_input(scripts[index], spent_outputs[index], tx, precomputed, index)

        if n_inputs < self.PARALLEL_FROM_INPUTS or self._threads == 1:
            check(range(n_inputs))
            return
        step = -(-n_inputs // self._threads)
        chunks = [range(i, min(i + step, n_inputs)) for i in range(0, n_inputs, step)]
        for future in [self._executor().submit(check, chunk) for chunk in chunks]:
            future.result()  # re-raises the first VerificationFailed

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="kernel-verify")
            return self._pool


def _verify_input(script: Any, spent: SpentOutput, tx: Any, precomputed: Any, index: int) -> None:
    try:
        ok = script.verify(
            spent.amount_sat, tx, precomputed, index, pbk.ScriptVerificationFlags.ALL
        )
    except Exception as exc:
        raise VerificationFailed(f"kernel refused input {index}: {exc}") from exc
    if not ok:
        raise VerificationFailed(f"input {index} does not verify in libbitcoinkernel")
