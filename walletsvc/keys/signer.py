"""The hot signer: the only place where a seed becomes private keys and signatures.

It trusts nothing the database says about keys. Before producing any signature it re-derives,
from the decrypted seed, the key behind every input and every change output and compares
scripts; it matches payouts one-to-one against the approvals it was handed; and it caps the
fee. After signing, Bitcoin Core's own script interpreter (libbitcoinkernel, through the
ScriptVerifier port) must accept every input, or nothing is returned.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Mapping, Sequence

from walletsvc.domain.address import script_to_address
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.hashes import hash160, sha256d
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

from .errors import SeedDecryptionError
from .hd import HARDENED, AccountKeys, DerivedKey, p2wpkh_script_for_pubkey
from .keystore import EncryptedSeed, decrypt_seed
from .sealing import SeedVault
from .sighash import SIGHASH_ALL, SegwitV0Sighasher, p2wpkh_script_code

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


class _KeySession:
    """Per-call key cache: one decrypted account per epoch, one derivation per KeyPath."""

    __slots__ = ("_accounts", "_keys", "_network", "_seeds", "_vault", "_wallet")

    def __init__(
        self, vault: SeedVault, wallet: str, network: Network, seeds: Mapping[int, EncryptedSeed]
    ) -> None:
        self._vault = vault
        self._wallet = wallet
        self._network = network
        self._seeds = seeds
        self._accounts: dict[int, AccountKeys] = {}
        self._keys: dict[KeyPath, tuple[DerivedKey, bytes]] = {}

    def _account(self, epoch: int) -> AccountKeys:
        account = self._accounts.get(epoch)
        if account is None:
            try:
                secret = decrypt_seed(
                    self._vault,
                    self._seeds[epoch],
                    wallet=self._wallet,
                    epoch=epoch,
                    network=self._network,
                )
            except SeedDecryptionError as exc:
                raise SigningRefused(f"cannot use the seed of key epoch {epoch}: {exc}") from exc
            with secret:  # the account node is all we need; the seed is wiped right away
                account = AccountKeys(secret.seed, self._network)
            self._accounts[epoch] = account
        return account

    def key(self, path: KeyPath) -> tuple[DerivedKey, bytes]:
        """The key at ``path`` and its P2WPKH scriptPubKey."""
        cached = self._keys.get(path)
        if cached is None:
            key = self._account(path.epoch).key(path.chain, path.index)
            cached = (key, p2wpkh_script_for_pubkey(key.public_key))
            self._keys[path] = cached
        return cached

    def wipe(self) -> None:
        for account in self._accounts.values():
            account.wipe()
        self._accounts.clear()
        self._keys.clear()


class HotSigner:
    """Signs TransactionPlans for one KEK, after re-checking them against approvals.

    Refusals raise SigningRefused naming the input/output and the rule broken; a signature
    libbitcoinkernel does not accept raises VerificationFailed. Neither ever contains key
    material.
    """

    __slots__ = ("_vault", "_verifier")

    def __init__(self, vault: SeedVault, verifier: ScriptVerifier) -> None:
        self._vault = vault
        self._verifier = verifier

    def __repr__(self) -> str:
        return f"HotSigner(kek=Kek(id={self._vault.key_id}))"

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

        session = _KeySession(self._vault, wallet, network, seeds)
        try:
            _check_change(plan, session, network)
            tx = _sign_inputs(plan, session)
        finally:
            session.wipe()

        raw, base = tx.serialize()
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
    if path is None:
        raise SigningRefused(f"{what} has no key path")
    for name in ("epoch", "chain", "index"):
        value = getattr(path, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SigningRefused(f"{what} has an invalid key path ({name}={value!r})")
    if path.chain not in (0, 1) or path.index >= HARDENED:
        raise SigningRefused(f"{what} has a key path outside BIP84 chains 0/1 ({_path_str(path)})")
    return path


def _check_inputs(plan: TransactionPlan, session: _KeySession) -> list[DerivedKey]:
    keys: list[DerivedKey] = []
    for i, coin in enumerate(plan.inputs):
        path = _check_path(coin.key_path, f"input {i}")
        key, script = session.key(path)
        if bytes(coin.script_pubkey) != script:
            raise SigningRefused(
                f"input {i} ({coin.txid}:{coin.vout}) has scriptPubKey "
                f"{bytes(coin.script_pubkey).hex()}, but our key at {_path_str(path)} "
                f"pays to {script.hex()}"
            )
        keys.append(key)
    return keys


def _check_change(plan: TransactionPlan, session: _KeySession, network: Network) -> None:
    for i, out in enumerate(plan.outputs):
        if out.purpose is not OutputPurpose.CHANGE:
            continue
        path = _check_path(out.key_path, f"change output {i}")
        if path.chain != CHANGE_CHAIN:
            raise SigningRefused(
                f"change output {i} uses chain {path.chain}; change must be on chain {CHANGE_CHAIN}"
            )
        _, script = session.key(path)
        if bytes(out.script_pubkey) != script:
            raise SigningRefused(
                f"change output {i} pays to {_describe(out.script_pubkey, network)}, but our "
                f"change key at {_path_str(path)} is {_describe(script, network)}"
            )


def _sign_inputs(plan: TransactionPlan, session: _KeySession) -> _RawTx:
    """Check every input is ours, then sign it. Keys live only in this frame and the session."""
    keys = _check_inputs(plan, session)
    tx = _RawTx(plan)
    hasher = SegwitV0Sighasher(tx)  # type: ignore[arg-type]  # structurally a sighash._Tx
    for index, (coin, key) in enumerate(zip(plan.inputs, keys, strict=True)):
        digest = hasher.sighash(
            index, p2wpkh_script_code(hash160(key.public_key)), coin.amount_sat, SIGHASH_ALL
        )
        # libsecp256k1: RFC 6979 nonces and low-S signatures, DER-encoded.
        signature = key.private_key.sign(digest, hasher=None) + bytes([SIGHASH_ALL])
        tx.witnesses.append((signature, key.public_key))
    return tx


class _OutPoint:
    __slots__ = ("hash", "n")

    def __init__(self, txid: str, n: int) -> None:
        self.hash = bytes.fromhex(txid)[::-1]  # internal byte order
        self.n = n


class _TxIn:
    __slots__ = ("nSequence", "prevout")

    def __init__(self, prevout: _OutPoint, sequence: int) -> None:
        self.prevout = prevout
        self.nSequence = sequence


class _TxOut:
    __slots__ = ("nValue", "scriptPubKey")

    def __init__(self, value: int, script: bytes) -> None:
        self.nValue = value
        self.scriptPubKey = script


class _RawTx:
    """The transaction being signed, serialised directly (BIP144) rather than through
    python-bitcoinlib's object graph: at thousands of inputs and outputs its per-field stream
    serialisation was a tenth of the signing time. libbitcoinkernel checks every byte after.
    """

    __slots__ = ("nLockTime", "nVersion", "vin", "vout", "witnesses")

    def __init__(self, plan: TransactionPlan) -> None:
        self.nVersion = plan.version
        self.nLockTime = plan.locktime
        self.vin = [_TxIn(_OutPoint(c.txid, c.vout), plan.sequence) for c in plan.inputs]
        self.vout = [_TxOut(o.amount_sat, bytes(o.script_pubkey)) for o in plan.outputs]
        self.witnesses: list[tuple[bytes, bytes]] = []

    def _body(self) -> list[bytes]:
        parts = [compact_size(len(self.vin))]
        for txin in self.vin:
            parts.append(txin.prevout.hash + struct.pack("<IBI", txin.prevout.n, 0, txin.nSequence))
        parts.append(compact_size(len(self.vout)))
        for txout in self.vout:
            parts.append(serialize_output(txout.nValue, txout.scriptPubKey))
        return parts

    def serialize(self) -> tuple[bytes, bytes]:
        """(with witnesses, without): the raw transaction and what its txid hashes."""
        version, locktime = struct.pack("<i", self.nVersion), struct.pack("<I", self.nLockTime)
        body = b"".join(self._body())
        witness = b"".join(
            b"\x02" + compact_size(len(sig)) + sig + compact_size(len(pub)) + pub
            for sig, pub in self.witnesses
        )
        return version + b"\x00\x01" + body + witness + locktime, version + body + locktime
