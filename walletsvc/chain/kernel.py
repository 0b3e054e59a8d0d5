"""The only module that imports py-bitcoinkernel (pbk, alpha: pinned in pyproject).

Everything walletsvc asks of Bitcoin Core's consensus code goes through here: script checks of
the transactions we sign, and block validation/storage for the embedded regtest chain.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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


class KernelBlockRejected(Exception):
    """The kernel found a block invalid."""


class KernelUnavailable(Exception):
    """The kernel could not open its data directory (in use, or damaged)."""


class KernelChainstate:
    """A regtest chainstate stored and validated by libbitcoinkernel in ``datadir``.

    Holds the kernel's exclusive use of ``datadir`` until ``close``. Not thread-safe on its
    own: the embedded chain serialises calls with its lock. Hashes are display hex.
    """

    def __init__(self, datadir: Path) -> None:
        datadir.mkdir(parents=True, exist_ok=True)
        # block hash -> BlockValidationResult name of the last block_checked that failed.
        self._invalid: dict[str, str] = {}
        self._callbacks = pbk.ValidationInterfaceCallbacks(block_checked=self._on_block_checked)
        try:
            self._cm: pbk.ChainstateManager | None = pbk.load_chainman(
                datadir, pbk.ChainType.REGTEST, validation_callbacks=self._callbacks
            )
        except RuntimeError as exc:
            raise KernelUnavailable(f"cannot open the kernel datadir {datadir}: {exc}") from exc

    def _on_block_checked(self, _user_data: object, block: Any, state: Any) -> None:
        # Runs inside the kernel's call stack: never let an exception escape into C.
        try:
            if state.validation_mode != pbk.ValidationMode.VALID:
                self._invalid[str(block.block_hash)] = state.block_validation_result.name
        except Exception:  # noqa: S110
            pass

    @property
    def _chainman(self) -> pbk.ChainstateManager:
        if self._cm is None:
            raise RuntimeError("the kernel chainstate is closed")
        return self._cm

    def close(self) -> None:
        """Destroy the chainstate manager now (flushes and releases the datadir)."""
        if self._cm is not None:
            cm, self._cm = self._cm, None
            # __exit__ runs the C destructor at once instead of waiting for the GC.
            cm.__exit__(None, None, None)

    def tip(self) -> tuple[int, str]:
        chain = self._chainman.get_active_chain()
        entry = chain.block_tree_entries[chain.height]
        return int(entry.height), str(entry.block_hash)

    def hash_at(self, height: int) -> str | None:
        chain = self._chainman.get_active_chain()
        if height < 0 or height > chain.height:
            return None
        return str(chain.block_tree_entries[height].block_hash)

    def _entry(self, block_hash: str) -> Any | None:
        try:
            key = pbk.BlockHash(bytes.fromhex(block_hash)[::-1])
        except ValueError:
            return None
        entries = self._chainman.block_tree_entries
        if key not in entries:
            return None
        return entries[key]

    def height_of(self, block_hash: str) -> int | None:
        """Height of a block the kernel knows (any branch), or None."""
        entry = self._entry(block_hash)
        return None if entry is None else int(entry.height)

    def in_active_chain(self, block_hash: str) -> bool:
        entry = self._entry(block_hash)
        return entry is not None and self.hash_at(int(entry.height)) == block_hash

    def block_bytes(self, block_hash: str) -> bytes | None:
        entry = self._entry(block_hash)
        if entry is None or entry not in self._chainman.blocks:
            return None
        return bytes(self._chainman.blocks[entry])

    def ancestor_times(self, block_hash: str, count: int = 11) -> list[int]:
        """Timestamps of ``block_hash`` and its ancestors, oldest first (at most ``count``)."""
        entry = self._entry(block_hash)
        if entry is None:
            raise KeyError(block_hash)
        times: list[int] = []
        while len(times) < count:
            times.append(int(entry.block_header.timestamp.timestamp()))
            if entry.height == 0:
                break
            entry = entry.previous
        return times[::-1]

    def process_block(self, raw_block: bytes) -> str:
        """Hand a serialized block to the kernel; returns its hash (display hex).

        Raises KernelBlockRejected if the kernel finds it invalid. A valid block on a branch
        with less work is stored without moving the tip: callers compare the tip themselves.
        """
        try:
            block = pbk.Block(raw_block)
        except RuntimeError as exc:
            raise KernelBlockRejected("block does not deserialise") from exc
        block_hash = str(block.block_hash)
        self._invalid.pop(block_hash, None)
        try:
            self._chainman.process_block(block)
        except pbk.ProcessBlockException as exc:
            reason = self._invalid.pop(block_hash, None)
            raise KernelBlockRejected(f"kernel refused the block: {reason or exc}") from exc
        reason = self._invalid.pop(block_hash, None)
        if reason is not None:
            raise KernelBlockRejected(f"kernel refused the block: {reason}")
        return block_hash
