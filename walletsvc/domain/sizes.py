"""Virtual size of transactions spending P2WPKH inputs, estimated from above.

Every figure here is an upper bound on what the signed transaction will weigh, so a fee of
``rate × estimate_vsize(...)`` never pays below ``rate`` once signed. The only variable part of
a P2WPKH spend is the DER signature; we always count its 72-byte worst case (see below).
"""

from __future__ import annotations

from collections.abc import Sequence

from .serialize import compact_size

WITNESS_SCALE_FACTOR = 4
# Bitcoin Core's standardness limit (MAX_STANDARD_TX_WEIGHT); heavier transactions do not relay.
MAX_STANDARD_TX_WEIGHT = 400_000

VERSION_SIZE = 4
LOCKTIME_SIZE = 4
# Segwit serialisation: 0x00 marker and 0x01 flag, counted in the witness (weight 1 each).
SEGWIT_MARKER_FLAG_SIZE = 2
# Outpoint (32-byte txid + 4-byte vout) + scriptSig length 0x00 (empty for P2WPKH) + nSequence.
P2WPKH_INPUT_BASE_SIZE = 32 + 4 + 1 + 4
# DER signature with low-S (BIP62/BIP146 standardness): 0x30 len 0x02 rlen r 0x02 slen s, at most
# 6 + 33 + 32 = 71 bytes when r needs a 0x00 pad, plus the one-byte sighash type = 72. Signers
# that do not grind for low R produce 72 bytes about half of the time: never estimate 71.
MAX_SIGNATURE_SIZE = 72
# A lower bound for the rare occasions we need one (the size an already signed transaction may
# have had): 70 bytes covers every low-S signature except roughly 1 in 20,000, whose r and s are
# both a byte shorter than usual (or r two bytes shorter).
MIN_LIKELY_SIGNATURE_SIZE = 70
COMPRESSED_PUBKEY_SIZE = 33


def p2wpkh_witness_size(signature_size: int = MAX_SIGNATURE_SIZE) -> int:
    """Witness stack: item count (2) + varint + signature + varint + compressed pubkey."""
    return 1 + 1 + signature_size + 1 + COMPRESSED_PUBKEY_SIZE


P2WPKH_WITNESS_SIZE = p2wpkh_witness_size()
P2WPKH_INPUT_WEIGHT = WITNESS_SCALE_FACTOR * P2WPKH_INPUT_BASE_SIZE + P2WPKH_WITNESS_SIZE
# 272 weight units is exactly 68 vB, so each extra input adds 68 vB while the input count fits
# in a one-byte varint (fewer than 253 inputs).
P2WPKH_INPUT_VSIZE = P2WPKH_INPUT_WEIGHT // WITNESS_SCALE_FACTOR

P2WPKH_SCRIPT_SIZE = 22


def varint_size(n: int) -> int:
    """Length of Bitcoin's CompactSize encoding of ``n``."""
    return len(compact_size(n))


def output_size(script: bytes) -> int:
    """Serialised size of one output: 8-byte amount, script length varint, script."""
    return 8 + varint_size(len(script)) + len(script)


def estimate_weight(
    n_inputs: int, output_scripts: Sequence[bytes], *, signature_size: int = MAX_SIGNATURE_SIZE
) -> int:
    """Upper bound on the weight of a tx spending ``n_inputs`` P2WPKH inputs to these outputs.

    ``signature_size`` (DER + sighash byte) is the worst case unless a caller wants a lower bound.
    """
    if n_inputs < 0:
        raise ValueError("n_inputs cannot be negative")
    base = (
        VERSION_SIZE
        + varint_size(n_inputs)
        + n_inputs * P2WPKH_INPUT_BASE_SIZE
        + varint_size(len(output_scripts))
        + sum(output_size(script) for script in output_scripts)
        + LOCKTIME_SIZE
    )
    # Without inputs there is no witness, hence no marker/flag either (only useful as a bound).
    witness_per_input = p2wpkh_witness_size(signature_size)
    witness = SEGWIT_MARKER_FLAG_SIZE + n_inputs * witness_per_input if n_inputs else 0
    return WITNESS_SCALE_FACTOR * base + witness


def weight_to_vsize(weight: int) -> int:
    """BIP141 virtual size: weight / 4, rounded up."""
    return -(-weight // WITNESS_SCALE_FACTOR)


def estimate_vsize(
    n_inputs: int, output_scripts: Sequence[bytes], *, signature_size: int = MAX_SIGNATURE_SIZE
) -> int:
    """Upper bound on the virtual size (vB) of such a transaction."""
    return weight_to_vsize(estimate_weight(n_inputs, output_scripts, signature_size=signature_size))


def max_inputs_within_weight(
    output_scripts: Sequence[bytes], max_weight: int = MAX_STANDARD_TX_WEIGHT
) -> int:
    """The most P2WPKH inputs a tx with these outputs can spend and stay within ``max_weight``.

    Returns 0 when even a single input does not fit.
    """
    if estimate_weight(1, output_scripts) > max_weight:
        return 0
    # Weight grows strictly with the input count, so bisect for the last count that fits.
    low, high = 1, max_weight // P2WPKH_INPUT_WEIGHT + 1
    while low < high:
        mid = (low + high + 1) // 2
        if estimate_weight(mid, output_scripts) <= max_weight:
            low = mid
        else:
            high = mid - 1
    return low
