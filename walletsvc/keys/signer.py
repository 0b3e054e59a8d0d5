"""The hot signer: the only place where a seed becomes private keys and signatures.

It trusts nothing the database says about keys. Before producing any signature it takes, from
its own derivation of the decrypted seed (each key derived once per process and kept until
``wipe()``: keycache.py), the key behind every input and every change output and compares
scripts; it matches payouts one-to-one against the approvals it was handed; and it caps the
fee. After signing, Bitcoin Core's own script interpreter (libbitcoinkernel, through the
ScriptVerifier port) must accept every input, or nothing is returned.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NoReturn

from walletsvc.domain.address import script_to_address
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.hashes import sha256d
from walletsvc.domain.money import MAX_MONEY
from walletsvc.domain.network import Network
from walletsvc.domain.ports import ScriptVerifier, SpentOutput
from walletsvc.domain.serialize import compact_size, serialize_output
from walletsvc.domain.transaction import (
    CHANGE_CHAIN,
    RBF_SEQUENCE,
    ApprovedPayout,
    KeyPath,
    OutputPurpose,
    SignedTransaction,
    TransactionPlan,
)

from .hd import HARDENED
from .keycache import EpochKeys, KeyCache, SigningKey
from .keystore import EncryptedSeed
from .sealing import SeedVault
from .sighash import SIGHASH_ALL, SegwitV0Sighasher

_TXID_RE = re.compile(r"[0-9a-fA-F]{64}")
_UINT32_MAX = 0xFFFF_FFFF


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_MONEY


def _describe(script: bytes, network: Network) -> str:
    try:
        return script_to_address(script, network)
    except ValueError:
        return f"script {bytes(script).hex()}"


def _path_str(path: KeyPath) -> str:
    return f"epoch {path.epoch} chain {path.chain} index {path.index}"


class HotSigner:
    """Signs TransactionPlans for one KEK, after re-checking them against approvals.

    Refusals raise SigningRefused naming the input/output and the rule broken; a signature
    libbitcoinkernel does not accept raises VerificationFailed. Neither ever contains key
    material.
    """

    __slots__ = ("_keys", "_vault", "_verifier")

    def __init__(self, vault: SeedVault, verifier: ScriptVerifier) -> None:
        self._vault = vault
        self._verifier = verifier
        # Seeds decrypted and keys derived once per process, until wipe(): see keycache.py.
        self._keys = KeyCache(vault)

    def __repr__(self) -> str:
        return f"HotSigner(kek=Kek(id={self._vault.key_id}))"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a HotSigner holds unlocked keys and cannot be pickled or copied")

    def unlock(
        self,
        *,
        wallet: str,
        network: Network,
        seeds: Mapping[int, EncryptedSeed],
        derive: Mapping[int, int] | None = None,
    ) -> None:
        """Decrypt ``seeds`` now and derive, per BIP84 chain in ``derive``, its first keys.

        Optional: :meth:`sign` unlocks and derives on first use anyway. Calling it at start-up
        moves that cost out of the first payout's latency. Raises SigningRefused for a seed
        that does not decrypt for this wallet, epoch and network.
        """
        epochs = self._keys.epochs(wallet, network, seeds, set(seeds))
        for chain, count in (derive or {}).items():
            if chain not in (0, 1) or not 0 <= count <= HARDENED:
                raise ValueError(f"cannot derive {count!r} keys on BIP84 chain {chain!r}")
            for unlocked in epochs.values():
                for index in range(count):
                    unlocked.key(chain, index)

    def wipe(self) -> None:
        """Forget every decrypted account and derived key (Runtime.close calls it)."""
        self._keys.wipe()

    close = wipe

    def sign(
        self,
        *,
        wallet: str,
        network: Network,
        seeds: Mapping[int, EncryptedSeed],
        plan: TransactionPlan,
        approved: Sequence[ApprovedPayout],
        sweep_scripts: frozenset[bytes] = frozenset(),
        max_fee_sat: int,
    ) -> SignedTransaction:
        """Re-check ``plan``, sign every input, verify with the kernel, return the tx."""
        # Everything that needs no key first: refuse before a seed is ever decrypted.
        _check_shape(plan)
        fee = _check_fee(plan, max_fee_sat)
        _check_payouts_and_sweeps(plan, approved, sweep_scripts, network)
        needed = {coin.key_path.epoch for coin in plan.inputs} | {
            out.key_path.epoch
            for out in plan.outputs
            if out.purpose is OutputPurpose.CHANGE and out.key_path is not None
        }
        missing = sorted(e for e in needed if e not in seeds)
        if missing:
            raise SigningRefused(f"no seed for key epoch(s) {missing} of wallet {wallet!r}")

        epochs = self._keys.epochs(wallet, network, seeds, needed)
        _check_change(plan, epochs, network)
        raw, base = _sign_inputs(plan, _input_keys(plan, epochs))
        weight = 3 * len(base) + len(raw)
        txid = sha256d(base)[::-1].hex()

        spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
        self._verifier.verify_transaction(raw, spent)
        return SignedTransaction(txid=txid, raw=raw, fee_sat=fee, vsize=(weight + 3) // 4)


def _check_shape(plan: TransactionPlan) -> None:
    if not plan.inputs:
        raise SigningRefused("the plan has no inputs")
    if not plan.outputs:
        raise SigningRefused("the plan has no outputs")
    if plan.version not in (1, 2) or isinstance(plan.version, bool):
        raise SigningRefused(f"transaction version {plan.version!r} is not 1 or 2")
    if (
        isinstance(plan.locktime, bool)
        or not isinstance(plan.locktime, int)
        or not (0 <= plan.locktime <= _UINT32_MAX)
    ):
        raise SigningRefused(f"locktime {plan.locktime!r} is out of range")
    if (
        isinstance(plan.sequence, bool)
        or not isinstance(plan.sequence, int)
        or not (0 <= plan.sequence <= RBF_SEQUENCE)
    ):
        raise SigningRefused(
            f"nSequence {plan.sequence!r} does not signal BIP125 replaceability "
            f"(must be at most {RBF_SEQUENCE:#x})"
        )
    seen: set[tuple[str, int]] = set()
    for i, coin in enumerate(plan.inputs):
        if not isinstance(coin.txid, str) or not _TXID_RE.fullmatch(coin.txid):
            raise SigningRefused(f"input {i} has a malformed txid")
        if (
            isinstance(coin.vout, bool)
            or not isinstance(coin.vout, int)
            or not (0 <= coin.vout <= _UINT32_MAX)
        ):
            raise SigningRefused(f"input {i} has an invalid output index {coin.vout!r}")
        outpoint = (coin.txid.lower(), coin.vout)
        if outpoint in seen:
            raise SigningRefused(
                f"input {i} spends {coin.txid}:{coin.vout}, which an earlier input already spends"
            )
        seen.add(outpoint)
        if not _is_amount(coin.amount_sat):
            raise SigningRefused(f"input {i} has an invalid amount {coin.amount_sat!r}")
    for i, out in enumerate(plan.outputs):
        if not _is_amount(out.amount_sat):
            raise SigningRefused(f"output {i} has an invalid amount {out.amount_sat!r}")
        if not isinstance(out.script_pubkey, bytes) or not out.script_pubkey:
            raise SigningRefused(f"output {i} has no scriptPubKey")


def _check_fee(plan: TransactionPlan, max_fee_sat: int) -> int:
    if isinstance(max_fee_sat, bool) or not isinstance(max_fee_sat, int) or max_fee_sat < 0:
        raise SigningRefused(f"the fee cap {max_fee_sat!r} is not a non-negative integer")
    inputs, outputs = plan.input_total, plan.output_total
    fee = inputs - outputs
    if fee < 0:
        raise SigningRefused(
            f"outputs total {outputs} sat but inputs only {inputs} sat (fee would be {fee} sat)"
        )
    if fee > max_fee_sat:
        raise SigningRefused(f"fee {fee} sat exceeds the cap of {max_fee_sat} sat")
    if plan.fee_sat != fee:
        raise SigningRefused(
            f"the plan states a fee of {plan.fee_sat!r} sat but inputs minus outputs is {fee} sat"
        )
    return fee


def _check_payouts_and_sweeps(
    plan: TransactionPlan,
    approved: Sequence[ApprovedPayout],
    sweep_scripts: frozenset[bytes],
    network: Network,
) -> None:
    """Payout outputs and approvals must match one-to-one as a multiset of (script, amount)."""
    ids: set[str] = set()
    remaining: Counter[tuple[bytes, int]] = Counter()
    for approval in approved:
        if approval.withdrawal_id in ids:
            raise SigningRefused(f"withdrawal {approval.withdrawal_id} is approved twice")
        ids.add(approval.withdrawal_id)
        if not _is_amount(approval.amount_sat):
            raise SigningRefused(
                f"approval of withdrawal {approval.withdrawal_id} has an invalid amount"
            )
        remaining[(bytes(approval.script_pubkey), approval.amount_sat)] += 1

    for i, out in enumerate(plan.outputs):
        script = bytes(out.script_pubkey)
        if out.purpose is OutputPurpose.PAYOUT:
            key = (script, out.amount_sat)
            if remaining[key] > 0:
                remaining[key] -= 1
                continue
            approved_amounts = sorted(
                a.amount_sat for a in approved if bytes(a.script_pubkey) == script
            )
            where = _describe(script, network)
            if approved_amounts:
                raise SigningRefused(
                    f"output {i} pays {out.amount_sat} sat to {where}, but the approved "
                    f"amount(s) for that destination are {approved_amounts} sat "
                    "(or were already used by other outputs)"
                )
            raise SigningRefused(
                f"output {i} pays {out.amount_sat} sat to {where}, which no approved payout names"
            )
        if out.purpose is OutputPurpose.SWEEP:
            if script not in sweep_scripts:
                raise SigningRefused(
                    f"sweep output {i} pays to {_describe(script, network)}, "
                    "which is not an allowed sweep destination"
                )
            continue
        if out.purpose is not OutputPurpose.CHANGE:
            raise SigningRefused(f"output {i} has an unknown purpose {out.purpose!r}")

    # Anything left over was approved but is not paid by this transaction.
    for approval in approved:
        key = (bytes(approval.script_pubkey), approval.amount_sat)
        if remaining[key] > 0:
            remaining[key] -= 1
            raise SigningRefused(
                f"approved withdrawal {approval.withdrawal_id} ({approval.amount_sat} sat to "
                f"{_describe(key[0], network)}) has no matching output"
            )


def _check_path(path: KeyPath | None, what: str) -> KeyPath:
    # The common case in one expression (exact ints, BIP84 chain, unhardened index); anything
    # else goes through the checks below, which name what is wrong.
    if (
        type(path) is KeyPath
        and type(path.epoch) is int
        and type(path.chain) is int
        and type(path.index) is int
        and path.epoch >= 0
        and path.chain in (0, 1)
        and 0 <= path.index < HARDENED
    ):
        return path
    if path is None:
        raise SigningRefused(f"{what} has no key path")
    for name in ("epoch", "chain", "index"):
        value = getattr(path, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SigningRefused(f"{what} has an invalid key path ({name}={value!r})")
    if path.chain not in (0, 1) or path.index >= HARDENED:
        raise SigningRefused(f"{what} has a key path outside BIP84 chains 0/1 ({_path_str(path)})")
    return path


def _input_keys(plan: TransactionPlan, epochs: Mapping[int, EpochKeys]) -> list[SigningKey]:
    """The key of every input, each checked to pay to the input's scriptPubKey."""
    keys: list[SigningKey] = []
    for i, coin in enumerate(plan.inputs):
        path = _check_path(coin.key_path, f"input {i}")
        key = epochs[path.epoch].key(path.chain, path.index)
        if coin.script_pubkey != key.script_pubkey:
            raise SigningRefused(
                f"input {i} ({coin.txid}:{coin.vout}) has scriptPubKey "
                f"{bytes(coin.script_pubkey).hex()}, but our key at {_path_str(path)} "
                f"pays to {key.script_pubkey.hex()}"
            )
        keys.append(key)
    return keys


def _check_change(plan: TransactionPlan, epochs: Mapping[int, EpochKeys], network: Network) -> None:
    for i, out in enumerate(plan.outputs):
        if out.purpose is not OutputPurpose.CHANGE:
            continue
        path = _check_path(out.key_path, f"change output {i}")
        if path.chain != CHANGE_CHAIN:
            raise SigningRefused(
                f"change output {i} uses chain {path.chain}; change must be on chain {CHANGE_CHAIN}"
            )
        script = epochs[path.epoch].key(path.chain, path.index).script_pubkey
        if bytes(out.script_pubkey) != script:
            raise SigningRefused(
                f"change output {i} pays to {_describe(out.script_pubkey, network)}, but our "
                f"change key at {_path_str(path)} is {_describe(script, network)}"
            )


_SIGHASH_ALL_BYTE = bytes([SIGHASH_ALL])
_OUTPOINT_INDEX = struct.Struct("<I")


def _sign_inputs(plan: TransactionPlan, keys: list[SigningKey]) -> tuple[bytes, bytes]:
    """Sign every input; return (the BIP144 transaction, its serialisation without witnesses).

    The transaction is serialised directly rather than through python-bitcoinlib's object
    graph: at thousands of inputs and outputs its per-field stream serialisation was a tenth
    of the signing time. The outpoints, sequences and outputs are put in wire form once, for
    both the BIP143 hashes and the transaction; libbitcoinkernel checks every byte after.
    """
    sequence = _OUTPOINT_INDEX.pack(plan.sequence)
    outpoints = [
        bytes.fromhex(coin.txid)[::-1] + _OUTPOINT_INDEX.pack(coin.vout) for coin in plan.inputs
    ]
    outputs = [serialize_output(o.amount_sat, bytes(o.script_pubkey)) for o in plan.outputs]
    hasher = SegwitV0Sighasher.from_serialized(
        version=plan.version,
        locktime=plan.locktime,
        outpoints=outpoints,
        sequences=[sequence] * len(outpoints),
        outputs=outputs,
    )
    witnesses: list[bytes] = []
    for index, (coin, key) in enumerate(zip(plan.inputs, keys, strict=True)):
        digest = hasher.sighash_all_prefixed(index, key.script_code, coin.amount_sat)
        # libsecp256k1: RFC 6979 nonces and low-S signatures, DER-encoded.
        signature = key.private_key.sign(digest, hasher=None) + _SIGHASH_ALL_BYTE
        # Two stack items: <signature> <33-byte compressed public key>.
        witnesses.append(
            b"\x02" + compact_size(len(signature)) + signature + b"\x21" + key.public_key
        )
    empty_script_and_sequence = b"\x00" + sequence
    body = b"".join(
        (
            compact_size(len(outpoints)),
            b"".join([o + empty_script_and_sequence for o in outpoints]),
            compact_size(len(outputs)),
            b"".join(outputs),
        )
    )
    version = struct.pack("<i", plan.version)
    locktime = struct.pack("<I", plan.locktime)
    raw = b"".join((version, b"\x00\x01", body, b"".join(witnesses), locktime))
    return raw, version + body + locktime
