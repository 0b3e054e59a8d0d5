"""BIP174 PSBTs for spending cold coins: made here, signed offline by hardware wallets.

embit parses and serialises the PSBTs (BIP174 is not written by hand here). What this module
adds is the service's own rules for a PSBT that comes back signed:

* it must be the very transaction proposed: same version, locktime, inputs (outpoints and
  sequences) and outputs (amounts and scripts), in the same order: nothing changed, added or
  dropped;
* a signature is kept only for a key the input actually spends to (the P2WPKH key, or one of
  the multisig's keys), only with SIGHASH_ALL, and only if it verifies against the input's
  BIP143 digest; anything else is refused, naming the input;
* the finished transaction is built by embit's finalizer from the checked signatures, and the
  caller still has libbitcoinkernel verify every input before broadcasting.

Nothing here holds a private key: the service only ever sees public keys and signatures.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from bitcoin.core import CTransaction
from coincurve import PublicKey
from embit import ec
from embit.finalizer import finalize_psbt
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from walletsvc.domain.errors import InvalidInput
from walletsvc.domain.hashes import hash160

from .descriptor import KeyOrigin
from .sighash import SIGHASH_ALL, SegwitV0Sighasher, p2wpkh_script_code

# A PSBT of a few thousand inputs stays far below this; it bounds what an upload may cost.
MAX_PSBT_BYTES = 4_000_000


@dataclass(frozen=True)
class ColdInput:
    """A cold coin to spend and what a signer needs to know about it."""

    txid: str  # display hex
    vout: int
    amount_sat: int
    script_pubkey: bytes
    origins: tuple[KeyOrigin, ...]  # one key (P2WPKH) or the multisig's keys
    witness_script: bytes | None = None  # the multisig script of a P2WSH coin
    threshold: int = 1  # signatures needed


@dataclass(frozen=True)
class ProposedOutput:
    script_pubkey: bytes
    amount_sat: int
    # For an output back to cold storage, so that a hardware wallet recognises its change.
    origins: tuple[KeyOrigin, ...] = ()
    witness_script: bytes | None = None


def _derivations(origins: Sequence[KeyOrigin]) -> dict[ec.PublicKey, DerivationPath]:
    return {
        ec.PublicKey.parse(o.pubkey): DerivationPath(o.fingerprint, list(o.path)) for o in origins
    }


def build_psbt(
    inputs: Sequence[ColdInput],
    outputs: Sequence[ProposedOutput],
    *,
    locktime: int,
    sequence: int,
    version: int = 2,
) -> PSBT:
    """An unsigned PSBT with witness UTXOs, witness scripts and BIP32 key origins."""
    tx = Transaction(
        version=version,
        locktime=locktime,
        vin=[TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=sequence) for c in inputs],
        vout=[TransactionOutput(o.amount_sat, Script(o.script_pubkey)) for o in outputs],
    )
    psbt = PSBT(tx)
    for scope, coin in zip(psbt.inputs, inputs, strict=True):
        scope.witness_utxo = TransactionOutput(coin.amount_sat, Script(coin.script_pubkey))
        if coin.witness_script is not None:
            scope.witness_script = Script(coin.witness_script)
        scope.bip32_derivations = _derivations(coin.origins)
    for out_scope, output in zip(psbt.outputs, outputs, strict=True):
        if output.witness_script is not None:
            out_scope.witness_script = Script(output.witness_script)
        out_scope.bip32_derivations = _derivations(output.origins)
    return psbt


def unsigned_tx(psbt: PSBT) -> bytes:
    """The transaction without witnesses: what the PSBT commits to, and what its txid hashes."""
    raw: bytes = psbt.tx.serialize()
    return raw


def to_base64(psbt: PSBT) -> str:
    text: str = psbt.to_string()
    return text


def parse_psbt(text: object, *, field: str = "psbt") -> PSBT:
    """Decode a base64 PSBT; InvalidInput naming ``field`` for anything that is not one."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("expected a base64 PSBT", field=field)
    if len(text) > MAX_PSBT_BYTES * 4 // 3 + 4:
        raise InvalidInput("the PSBT is too large", field=field)
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the PSBT is not valid base64", field=field) from None
    if not raw.startswith(PSBT.MAGIC):
        raise InvalidInput("this is not a PSBT (it lacks the 'psbt' magic bytes)", field=field)
    try:
        return PSBT.parse(raw)
    except Exception:  # embit raises several types for malformed BIP174 data
        raise InvalidInput("the PSBT is malformed (BIP174)", field=field) from None


def check_same_transaction(proposed: bytes, uploaded: PSBT, *, field: str = "psbt") -> None:
    """Refuse a PSBT whose transaction differs from the ``proposed`` unsigned transaction."""
    try:
        got = CTransaction.deserialize(unsigned_tx(uploaded))
    except Exception:
        raise InvalidInput("the PSBT's transaction cannot be read", field=field) from None
    want = CTransaction.deserialize(proposed)
    if got.serialize() == want.serialize():
        return
    raise InvalidInput(
        f"the PSBT is not the proposed transaction: {_difference(want, got)}", field=field
    )


def _difference(want: CTransaction, got: CTransaction) -> str:
    wanted_in = [(bytes(i.prevout.hash), i.prevout.n, i.nSequence) for i in want.vin]
    got_in = [(bytes(i.prevout.hash), i.prevout.n, i.nSequence) for i in got.vin]
    if len(got_in) < len(wanted_in):
        missing = [x for x in wanted_in if x not in got_in]
        where = f"{missing[0][0][::-1].hex()}:{missing[0][1]}" if missing else "one"
        return f"it drops an input ({len(got_in)} of {len(wanted_in)}; missing {where})"
    if len(got_in) > len(wanted_in):
        return f"it adds an input ({len(got_in)} instead of {len(wanted_in)})"
    for n, (a_in, b_in) in enumerate(zip(wanted_in, got_in, strict=True)):
        if a_in != b_in:
            return f"input {n} differs (another coin, order or sequence)"
    wanted_out = [(int(o.nValue), bytes(o.scriptPubKey)) for o in want.vout]
    got_out = [(int(o.nValue), bytes(o.scriptPubKey)) for o in got.vout]
    if len(got_out) > len(wanted_out):
        return f"it adds an output ({len(got_out)} instead of {len(wanted_out)})"
    if len(got_out) < len(wanted_out):
        return f"it drops an output ({len(got_out)} instead of {len(wanted_out)})"
    for n, (a, b) in enumerate(zip(wanted_out, got_out, strict=True)):
        if a[1] != b[1]:
            return f"output {n} pays another script"
        if a[0] != b[0]:
            return f"output {n} pays {b[0]} sat instead of {a[0]} sat"
    return "its version or locktime differs"


def merge_signatures(
    combined: PSBT, uploaded: PSBT, inputs: Sequence[ColdInput], *, field: str = "psbt"
) -> int:
    """Copy the uploaded PSBT's signatures into ``combined`` after checking each one.

    Both PSBTs must already be known to carry the proposed transaction. Returns how many
    signatures were new. Raises InvalidInput (nothing copied) for any signature that is not
    for this input's keys, not SIGHASH_ALL, or does not verify.
    """
    tx = CTransaction.deserialize(unsigned_tx(combined))
    hasher = SegwitV0Sighasher(tx)
    checked: list[tuple[int, ec.PublicKey, bytes]] = []
    for index, (scope, coin) in enumerate(zip(uploaded.inputs, inputs, strict=True)):
        allowed = {o.pubkey for o in coin.origins}
        for pub, signature in scope.partial_sigs.items():
            key = pub.sec()
            if key not in allowed:
                raise InvalidInput(
                    f"input {index} carries a signature by a key it does not spend to", field=field
                )
            _check_signature(hasher, index, coin, key, bytes(signature), field=field)
            checked.append((index, pub, bytes(signature)))
        if scope.final_scriptwitness is not None and not scope.partial_sigs:
            raise InvalidInput(
                f"input {index} is finalized; upload the PSBT before finalizing "
                "(with its partial signatures)",
                field=field,
            )
    new = 0
    for index, pub, signature in checked:
        sigs = combined.inputs[index].partial_sigs
        if sigs.get(pub) != signature:
            new += 1
        sigs[pub] = signature
    return new


def _check_signature(
    hasher: SegwitV0Sighasher, index: int, coin: ColdInput, key: bytes, sig: bytes, *, field: str
) -> None:
    if not sig or sig[-1] != SIGHASH_ALL:
        raise InvalidInput(f"input {index} has a signature that is not SIGHASH_ALL", field=field)
    if coin.witness_script is not None:
        script_code = coin.witness_script
    else:
        script_code = p2wpkh_script_code(hash160(key))
    digest = hasher.sighash_all(index, script_code, coin.amount_sat)
    try:
        valid = PublicKey(key).verify(sig[:-1], digest, hasher=None)
    except ValueError:
        valid = False
    if not valid:
        raise InvalidInput(f"input {index} has a signature that does not verify", field=field)


def missing_signatures(combined: PSBT, inputs: Sequence[ColdInput]) -> list[int]:
    """Per input, how many more signatures it needs (0: ready)."""
    return [
        max(0, coin.threshold - len(scope.partial_sigs))
        for scope, coin in zip(combined.inputs, inputs, strict=True)
    ]


def finalize(combined: PSBT) -> bytes:
    """The signed transaction (BIP144) from a PSBT with enough checked signatures."""
    tx = finalize_psbt(combined)
    if tx is None:
        raise InvalidInput("the PSBT does not have every signature yet", field="psbt")
    raw: bytes = tx.serialize()
    return raw
