"""The dev chain's chainstate: blocks validated and stored by libbitcoinkernel (pbk).

Beside walletsvc.chain.kernel (the product's script checks), the only other module that
imports py-bitcoinkernel; it belongs to the development chain, not to the product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pbk


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
