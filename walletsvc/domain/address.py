"""Addresses of one explicit network, decoded to and encoded from scriptPubKeys.

Decoding is strict: an address of another network (a mainnet address on regtest, say) is an
error, as is a bech32 checksum on a v1+ program (BIP350 demands bech32m) or an unknown
witness version/length combination we could not spend to safely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from bip_utils import Base58Decoder, SegwitBech32Decoder, SegwitBech32Encoder

from .errors import InvalidAddress
from .network import SEGWIT_HRPS, Network

MAX_ADDRESS_LENGTH = 90


class ScriptType(StrEnum):
    P2PKH = "p2pkh"
    P2SH = "p2sh"
    P2WPKH = "p2wpkh"
    P2WSH = "p2wsh"
    P2TR = "p2tr"


@dataclass(frozen=True)
class Destination:
    """A decoded address: what we put in an output and how large that output is."""

    address: str
    script_pubkey: bytes
    script_type: ScriptType


def decode_address(address: object, network: Network, *, field: str = "destination") -> Destination:
    if not isinstance(address, str) or not address:
        raise InvalidAddress(f"{field} must be a non-empty address string", field=field)
    if len(address) > MAX_ADDRESS_LENGTH or not address.isascii() or not address.isalnum():
        raise InvalidAddress(f"{field} is not a valid address", field=field)
    hrp = network.params.bech32_hrp
    if address.lower().startswith(hrp + "1"):
        return _decode_segwit(address, hrp, field)
    if _looks_like_segwit(address):
        raise InvalidAddress(
            f"{field} is an address of another network (this wallet is on {network.value})",
            field=field,
        )
    return _decode_base58(address, network, field)


def script_to_address(script_pubkey: bytes, network: Network) -> str:
    """Encode a standard output script as an address of ``network`` (segwit scripts only)."""
    if len(script_pubkey) >= 4 and script_pubkey[1] == len(script_pubkey) - 2:
        version = script_pubkey[0]
        witness_version = 0 if version == 0 else version - 0x50
        if 0 <= witness_version <= 16:
            return witness_address(witness_version, script_pubkey[2:], network)
    raise ValueError("not a segwit output script")


def witness_address(witness_version: int, program: bytes, network: Network) -> str:
    """The bech32 (v0) or bech32m (v1+) address of a witness program: our only encoder.

    bip-utils' encoder is fast enough for the derivation target (docs/performance.md), so no
    hand-written one is kept.
    """
    hrp = network.params.bech32_hrp
    return str(SegwitBech32Encoder.Encode(hrp, witness_version, program))


# --- output script templates: the only place each is written --------------------------------


def p2pkh_script(pubkey_hash: bytes) -> bytes:
    """OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG (also BIP143's P2WPKH scriptCode)."""
    return b"\x76\xa9\x14" + pubkey_hash + b"\x88\xac"


def p2sh_script(script_hash: bytes) -> bytes:
    """OP_HASH160 <20> OP_EQUAL."""
    return b"\xa9\x14" + script_hash + b"\x87"


def witness_script_pubkey(witness_version: int, program: bytes) -> bytes:
    """OP_n <program>: the scriptPubKey of a witness program (BIP141)."""
    op_version = 0 if witness_version == 0 else 0x50 + witness_version
    return bytes([op_version, len(program)]) + program


def p2wpkh_script(pubkey_hash: bytes) -> bytes:
    """OP_0 <20-byte key hash>."""
    return b"\x00\x14" + pubkey_hash


def p2wsh_script(witness_script: bytes) -> bytes:
    """OP_0 <SHA256 of the witness script>."""
    return witness_script_pubkey(0, hashlib.sha256(witness_script).digest())


def _looks_like_segwit(address: str) -> bool:
    lowered = address.lower()
    return any(lowered.startswith(hrp + "1") for hrp in SEGWIT_HRPS)


def _decode_segwit(address: str, hrp: str, field: str) -> Destination:
    if address != address.lower() and address != address.upper():
        raise InvalidAddress(f"{field} mixes upper and lower case", field=field)
    try:
        version, program = SegwitBech32Decoder.Decode(hrp, address.lower())
    except Exception as exc:  # bip-utils raises several unrelated types for bad input
        raise InvalidAddress(f"{field} is not a valid bech32/bech32m address", field=field) from exc
    program = bytes(program)
    if version == 0 and len(program) == 20:
        script_type = ScriptType.P2WPKH
    elif version == 0 and len(program) == 32:
        script_type = ScriptType.P2WSH
    elif version == 1 and len(program) == 32:
        script_type = ScriptType.P2TR
    else:
        # Future witness versions are valid addresses but anyone-can-spend today: refuse to pay.
        raise InvalidAddress(
            f"{field} uses witness version {version} with a {len(program)}-byte program, "
            "which this service does not pay to",
            field=field,
        )
    script = witness_script_pubkey(version, program)
    return Destination(address=address.lower(), script_pubkey=script, script_type=script_type)


def _decode_base58(address: str, network: Network, field: str) -> Destination:
    try:
        payload = bytes(Base58Decoder.CheckDecode(address))
    except Exception as exc:
        raise InvalidAddress(f"{field} is not a valid address", field=field) from exc
    if len(payload) != 21:
        raise InvalidAddress(f"{field} is not a valid address", field=field)
    version, body = payload[0], payload[1:]
    params = network.params
    if version == params.p2pkh_version:
        return Destination(address, p2pkh_script(body), ScriptType.P2PKH)
    if version == params.p2sh_version:
        return Destination(address, p2sh_script(body), ScriptType.P2SH)
    raise InvalidAddress(
        f"{field} is an address of another network (this wallet is on {network.value})",
        field=field,
    )
