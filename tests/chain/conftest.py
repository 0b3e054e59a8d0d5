"""Fixtures for the chain adapters: a real kernel-backed regtest chain and test-only signing.

The signer here is deliberately minimal (P2WPKH, SIGHASH_ALL) and lives only in tests; the
production signer belongs to walletsvc.keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import coincurve
import pytest
from bitcoin.core import COutPoint, CTransaction, CTxIn, CTxInWitness, CTxOut, CTxWitness, lx
from bitcoin.core.script import (
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)

from walletsvc.devchain.embedded import EmbeddedChain

RBF_SEQUENCE = 0xFFFFFFFD
FINAL_SEQUENCE = 0xFFFFFFFF


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


@dataclass(frozen=True)
class TestKey:
    """A throwaway secp256k1 key and its P2WPKH output script."""

    __test__ = False  # not a pytest test class

    private: coincurve.PrivateKey

    @property
    def pubkey(self) -> bytes:
        return bytes(self.private.public_key.format(compressed=True))

    @property
    def script_pubkey(self) -> bytes:
        return b"\x00\x14" + hash160(self.pubkey)


def make_key(seed: int) -> TestKey:
    secret = hashlib.sha256(f"walletsvc test key {seed}".encode()).digest()
    return TestKey(coincurve.PrivateKey(secret))


@dataclass(frozen=True)
class Prevout:
    txid: str
    vout: int
    amount_sat: int
    key: TestKey


def spend(
    inputs: list[Prevout],
    outputs: list[tuple[bytes, int]],
    *,
    sequence: int = RBF_SEQUENCE,
    locktime: int = 0,
    sign_amounts: list[int] | None = None,
    sign_with: list[TestKey] | None = None,
) -> bytes:
    """A signed P2WPKH spend. ``sign_amounts``/``sign_with`` override what goes into the
    sighash / who signs, to produce transactions the kernel must refuse."""
    vin = [CTxIn(COutPoint(lx(p.txid), p.vout), CScript(), sequence) for p in inputs]
    vout = [CTxOut(amount, CScript(script)) for script, amount in outputs]
    unsigned = CTransaction(vin, vout, locktime, 2)
    witnesses = []
    for index, prevout in enumerate(inputs):
        amount = sign_amounts[index] if sign_amounts else prevout.amount_sat
        signer = sign_with[index] if sign_with else prevout.key
        script_code = CScript(
            [OP_DUP, OP_HASH160, hash160(prevout.key.pubkey), OP_EQUALVERIFY, OP_CHECKSIG]
        )
        sighash = SignatureHash(
            script_code,
            unsigned,
            index,
            SIGHASH_ALL,
            amount=amount,
            sigversion=SIGVERSION_WITNESS_V0,
        )
        signature = signer.private.sign(sighash, hasher=None) + bytes([SIGHASH_ALL])
        witnesses.append(CTxInWitness(CScriptWitness([signature, prevout.key.pubkey])))
    signed = CTransaction(vin, vout, locktime, 2, CTxWitness(witnesses))
    return bytes(signed.serialize())


def txid_of(raw: bytes) -> str:
    from bitcoin.core import b2lx

    return str(b2lx(CTransaction.deserialize(raw).GetTxid()))


@pytest.fixture
def chain_dir(tmp_path: Path) -> Path:
    return tmp_path / "chain"


@pytest.fixture
def chain(chain_dir: Path) -> Iterator[EmbeddedChain]:
    c = EmbeddedChain(chain_dir, fee_rate_sat_per_vb=3)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def alice() -> TestKey:
    return make_key(1)


@pytest.fixture
def bob() -> TestKey:
    return make_key(2)


def fund(chain: EmbeddedChain, key: TestKey, coins: int = 1) -> list[Prevout]:
    """Mine ``coins`` blocks to ``key`` and mature them; returns the spendable coinbases."""
    hashes = chain.mine(coins, key.script_pubkey)
    chain.mine(100)
    prevouts = []
    for block_hash in hashes:
        height = chain.block_height(block_hash)
        assert height is not None
        found = [
            (op, u)
            for op, u in chain.utxos_for_script(key.script_pubkey).items()
            if u.height == height
        ]
        assert len(found) == 1
        (txid, vout), utxo = found[0]
        prevouts.append(Prevout(txid, vout, utxo.amount_sat, key))
    return prevouts
