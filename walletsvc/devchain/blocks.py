"""Pure regtest block building with python-bitcoinlib: coinbase, merkle roots, BIP141, PoW.

Nothing here touches libbitcoinkernel; the kernel decides whether what we build is valid.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from bitcoin.core import (
    CBlock,
    CBlockHeader,
    COutPoint,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    b2lx,
    lx,
)
from bitcoin.core.script import CScript, CScriptWitness

from walletsvc.domain.hashes import sha256d
from walletsvc.domain.money import COIN

REGTEST_BITS = 0x207FFFFF
REGTEST_HALVING_INTERVAL = 150
COINBASE_MATURITY = 100
BLOCK_VERSION = 0x20000000  # BIP9 top bits, no deployment signalled
MAX_BLOCK_WEIGHT = 4_000_000
# Room left for the header and the coinbase when packing mempool transactions.
COINBASE_WEIGHT_RESERVE = 4_000
WITNESS_RESERVED_VALUE = b"\x00" * 32
WITNESS_COMMITMENT_HEADER = bytes.fromhex("aa21a9ed")
# Default coinbase destination: P2WPKH of a constant hash nobody holds a key for.
BURN_SCRIPT_PUBKEY = b"\x00\x14" + hashlib.sha256(b"walletsvc regtest burn").digest()[:20]


def block_subsidy(height: int) -> int:
    """Regtest subsidy in satoshis: 50 BTC halved every 150 blocks."""
    halvings = height // REGTEST_HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def bits_to_target(bits: int) -> int:
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    return mantissa << (8 * (exponent - 3))


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root over internal-byte-order hashes (odd levels duplicate the last)."""
    if not hashes:
        raise ValueError("a merkle tree needs at least one leaf")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def witness_commitment_script(txs: Sequence[CTransaction]) -> bytes:
    """BIP141 commitment output script for a block whose non-coinbase txs are ``txs``."""
    # The coinbase's wtxid counts as all zeroes.
    wtxids = [b"\x00" * 32] + [tx.GetHash() for tx in txs]
    commitment = sha256d(merkle_root(wtxids) + WITNESS_RESERVED_VALUE)
    return b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment


def coinbase_tx(
    height: int,
    value_sat: int,
    script_pubkey: bytes,
    commitment_script: bytes,
    *,
    extra_nonce: int = 0,
) -> CTransaction:
    """A coinbase with the BIP34 height push, an extra nonce and the BIP141 commitment."""
    # CScript([height]) serialises the height exactly like Core's `CScript() << nHeight`.
    script_sig = CScript([height, struct.pack("<Q", extra_nonce)])
    txin = CTxIn(COutPoint(), script_sig, 0xFFFFFFFF)
    outs = [CTxOut(value_sat, CScript(script_pubkey)), CTxOut(0, CScript(commitment_script))]
    witness = CTxWitness([CTxInWitness(CScriptWitness([WITNESS_RESERVED_VALUE]))])
    return CTransaction([txin], outs, 0, 2, witness)


def median_time_past(timestamps: Sequence[int]) -> int:
    """Median of the (up to 11) most recent block times, as Core computes it."""
    window = sorted(timestamps[-11:])
    return window[len(window) // 2]


def next_block_time(now: int, mtp: int) -> int:
    return max(now, mtp + 1)


def assemble_block(
    parent_hash: str,
    height: int,
    txs: Sequence[CTransaction],
    fees_sat: int,
    *,
    coinbase_script_pubkey: bytes,
    timestamp: int,
    extra_nonce: int = 0,
    bits: int = REGTEST_BITS,
) -> CBlock:
    """A complete block on top of ``parent_hash`` (display hex), with a ground nonce."""
    coinbase = coinbase_tx(
        height,
        block_subsidy(height) + fees_sat,
        coinbase_script_pubkey,
        witness_commitment_script(txs),
        extra_nonce=extra_nonce,
    )
    vtx = [coinbase, *txs]
    root = merkle_root([tx.GetTxid() for tx in vtx])
    header = grind_header(
        CBlockHeader(
            nVersion=BLOCK_VERSION,
            hashPrevBlock=lx(parent_hash),
            hashMerkleRoot=root,
            nTime=timestamp,
            nBits=bits,
            nNonce=0,
        )
    )
    return CBlock(
        nVersion=header.nVersion,
        hashPrevBlock=header.hashPrevBlock,
        hashMerkleRoot=header.hashMerkleRoot,
        nTime=header.nTime,
        nBits=header.nBits,
        nNonce=header.nNonce,
        vtx=vtx,
    )


def grind_header(header: CBlockHeader) -> CBlockHeader:
    """Find a nonce meeting the header's target (a couple of tries at regtest difficulty)."""
    target = bits_to_target(header.nBits)
    prefix = header.serialize()[:76]
    for nonce in range(2**32):
        digest = sha256d(prefix + struct.pack("<I", nonce))
        if int.from_bytes(digest, "little") <= target:
            return CBlockHeader(
                nVersion=header.nVersion,
                hashPrevBlock=header.hashPrevBlock,
                hashMerkleRoot=header.hashMerkleRoot,
                nTime=header.nTime,
                nBits=header.nBits,
                nNonce=nonce,
            )
    raise RuntimeError("nonce space exhausted")  # pragma: no cover - impossible on regtest


def block_hash_hex(block: CBlock | CBlockHeader) -> str:
    return str(b2lx(block.GetHash()))


def txid_hex(tx: CTransaction) -> str:
    return str(b2lx(tx.GetTxid()))


def tx_weight(tx: CTransaction) -> int:
    return int(tx.calc_weight())


def tx_vsize(tx: CTransaction) -> int:
    return (tx_weight(tx) + 3) // 4
