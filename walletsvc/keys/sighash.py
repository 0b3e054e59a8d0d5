"""BIP143 signature hashes (segwit v0) with the per-transaction parts computed once.

python-bitcoinlib's ``SignatureHash(..., SIGVERSION_WITNESS_V0)`` recomputes hashPrevouts,
hashSequence and hashOutputs for every input, which makes signing an n-input, m-output
transaction O(n·(n+m)). ``SegwitV0Sighasher`` hashes them once; each input then costs one
double-SHA256 of a ~200-byte preimage.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Protocol

from walletsvc.domain.address import p2pkh_script
from walletsvc.domain.hashes import sha256d
from walletsvc.domain.serialize import compact_size, serialize_output

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
_ZERO32 = bytes(32)
_AMOUNT = struct.Struct("<q")


def p2wpkh_script_code(pubkey_hash: bytes) -> bytes:
    """BIP143 scriptCode of a P2WPKH input: the P2PKH script of the same key hash."""
    if len(pubkey_hash) != 20:
        raise ValueError("a P2WPKH key hash is 20 bytes")
    return p2pkh_script(pubkey_hash)


# Structural types for the parts of python-bitcoinlib's CTransaction that BIP143 reads, so
# both CTransaction and CMutableTransaction fit without importing its untyped classes here.
class _OutPoint(Protocol):
    hash: bytes
    n: int


class _TxIn(Protocol):
    prevout: _OutPoint
    nSequence: int


class _TxOut(Protocol):
    nValue: int
    scriptPubKey: bytes


class _Tx(Protocol):
    nVersion: int
    nLockTime: int
    vin: Sequence[_TxIn]
    vout: Sequence[_TxOut]


def _ser_outpoint(txin: _TxIn) -> bytes:
    return bytes(txin.prevout.hash) + struct.pack("<I", txin.prevout.n)


def _ser_output(txout: _TxOut) -> bytes:
    return serialize_output(txout.nValue, bytes(txout.scriptPubKey))


class SegwitV0Sighasher:
    """BIP143 sighashes for one transaction; build once, then ask per input.

    Holds the transaction's serialised outpoints, sequences and outputs, not the transaction:
    it must not change after construction (the cached hashes would go stale). For
    SIGHASH_ALL, the only type the hot signer produces, everything in the preimage except the
    input's outpoint, scriptCode, amount and sequence is joined once (``_all_head``,
    ``_all_tail``), so each input costs one join of seven byte strings and one double-SHA256.
    """

    __slots__ = (
        "_all_head",
        "_all_tail",
        "_hash_outputs",
        "_hash_prevouts",
        "_hash_sequence",
        "_locktime",
        "_outpoints",
        "_outputs",
        "_sequences",
        "_version",
    )

    def __init__(self, tx: _Tx) -> None:
        self._setup(
            tx.nVersion,
            tx.nLockTime,
            [_ser_outpoint(i) for i in tx.vin],
            [struct.pack("<I", i.nSequence) for i in tx.vin],
            [_ser_output(o) for o in tx.vout],
        )

    @classmethod
    def from_serialized(
        cls,
        *,
        version: int,
        locktime: int,
        outpoints: list[bytes],
        sequences: list[bytes],
        outputs: list[bytes],
    ) -> SegwitV0Sighasher:
        """From parts already in wire form (36-byte outpoints, 4-byte sequences, outputs):
        the signer serialises them once for both the sighashes and the transaction."""
        hasher = cls.__new__(cls)
        hasher._setup(version, locktime, outpoints, sequences, outputs)
        return hasher

    def _setup(
        self,
        version: int,
        locktime: int,
        outpoints: list[bytes],
        sequences: list[bytes],
        outputs: list[bytes],
    ) -> None:
        if len(outpoints) != len(sequences):
            raise ValueError("one sequence per outpoint")
        self._version = struct.pack("<i", version)
        self._locktime = struct.pack("<I", locktime)
        self._outpoints = outpoints
        self._sequences = sequences
        self._outputs = outputs
        self._hash_prevouts = sha256d(b"".join(outpoints))
        self._hash_sequence = sha256d(b"".join(sequences))
        self._hash_outputs = sha256d(b"".join(outputs))
        self._all_head = self._version + self._hash_prevouts + self._hash_sequence
        self._all_tail = self._hash_outputs + self._locktime + struct.pack("<I", SIGHASH_ALL)

    def sighash(self, index: int, script_code: bytes, amount_sat: int, hash_type: int) -> bytes:
        """The BIP143 digest for input ``index`` (``script_code`` without its length prefix)."""
        if not 0 <= index < len(self._outpoints):
            raise IndexError(f"input {index} out of range")
        base = hash_type & 0x1F
        anyone_can_pay = bool(hash_type & SIGHASH_ANYONECANPAY)
        hash_prevouts = _ZERO32 if anyone_can_pay else self._hash_prevouts
        hash_sequence = (
            self._hash_sequence
            if not anyone_can_pay and base not in (SIGHASH_SINGLE, SIGHASH_NONE)
            else _ZERO32
        )
        if base not in (SIGHASH_SINGLE, SIGHASH_NONE):
            hash_outputs = self._hash_outputs
        elif base == SIGHASH_SINGLE and index < len(self._outputs):
            hash_outputs = sha256d(self._outputs[index])
        else:
            hash_outputs = _ZERO32
        preimage = b"".join(
            (
                self._version,
                hash_prevouts,
                hash_sequence,
                self._outpoints[index],
                compact_size(len(script_code)),
                script_code,
                struct.pack("<q", amount_sat),
                self._sequences[index],
                hash_outputs,
                self._locktime,
                struct.pack("<I", hash_type & 0xFFFF_FFFF),
            )
        )
        return sha256d(preimage)

    def sighash_all(self, index: int, script_code: bytes, amount_sat: int) -> bytes:
        """SIGHASH_ALL digest: the only type the hot signer produces."""
        return self.sighash_all_prefixed(
            index, compact_size(len(script_code)) + script_code, amount_sat
        )

    def sighash_all_prefixed(
        self, index: int, prefixed_script_code: bytes, amount_sat: int
    ) -> bytes:
        """SIGHASH_ALL digest with a scriptCode that already carries its CompactSize length
        (the signer caches it per key): the per-input fast path."""
        if index < 0:
            raise IndexError(f"input {index} out of range")
        preimage = b"".join(
            (
                self._all_head,
                self._outpoints[index],  # IndexError past the last input
                prefixed_script_code,
                _AMOUNT.pack(amount_sat),
                self._sequences[index],
                self._all_tail,
            )
        )
        return sha256d(preimage)

    def p2wpkh_sighash_all(self, index: int, pubkey_hash: bytes, amount_sat: int) -> bytes:
        """SIGHASH_ALL digest of a P2WPKH input spending ``amount_sat`` to ``pubkey_hash``."""
        return self.sighash(index, p2wpkh_script_code(pubkey_hash), amount_sat, SIGHASH_ALL)
