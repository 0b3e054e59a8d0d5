"""The signer's wire format, shared by the client (service side) and the server (signer side).

One JSON object per line each way: ``{"id", "op", "params"}`` in, ``{"id", "ok": true,
"result"}`` or ``{"id", "ok": false, "error": {"code", "message"}}`` out. Plain values only:
scripts and raw transactions travel as hex, amounts as integer satoshis. A signing batch
(plan and approved payouts) is packed (``pack_batch``) and follows its request line as raw
bytes, announced by ``"attachment": <size>`` in the envelope. Decoding is strict; anything
malformed is a ``WireError``, which the server answers as ``invalid_request``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, TypeVar

from walletsvc.domain.canonical import canonical_json
from walletsvc.domain.ports import EpochKeys
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    SignedTransaction,
    TransactionPlan,
)

MAX_LINE_BYTES = 64 * 1024 * 1024  # a 2,000-output batch is well under 1 MiB; room to spare

# Error codes the server answers with (the client maps them to domain errors).
REFUSED = "signing_refused"
FROZEN = "frozen"
INVALID_REQUEST = "invalid_request"
VERIFICATION_FAILED = "verification_failed"
INTERNAL = "internal_error"
# Refusals of people's operations (walletsvc.signer.people): not signing refusals, so the
# service answers them like its own step-up failures instead of freezing a wallet.
STEP_UP_FAILED = "step_up_failed"  # a wrong TOTP code, or a passkey assertion that fails
PASSKEY_FAILED = "passkey_failed"  # a registration or assertion that does not verify
TOTP_REPLAYED = "totp_replayed"  # a code of a time step this member already used
NOT_ALLOWED = "not_allowed"  # unknown or disabled member, not an approver, no evidence
CONFLICT = "conflict"  # decided this digest before; a passkey registered already
THROTTLED = "throttled"  # too many failed step-ups for this member: wait

# What a transaction is for; recorded in the ledger. The signer's rules do not trust it: they
# look at the outputs (every non-change output to the cold destination, or payouts).
SIGN_KINDS = frozenset({"payout", "sweep", "fee_bump", "rotation", "shield"})


class WireError(ValueError):
    """A request or reply that does not follow the wire format."""


def _int(obj: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WireError(f"{key} must be an integer >= {minimum}")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise WireError(f"{key} must be a non-empty string")
    return value


def _hex(obj: dict[str, Any], key: str) -> bytes:
    try:
        return bytes.fromhex(_str(obj, key))
    except ValueError:
        raise WireError(f"{key} must be hex") from None


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{what} must be an object")
    return value


# -- a signing batch: the plan and the approved payouts in one packed blob ---------------------
#
# A 1,000-input x 1,000-output batch as JSON objects cost ~17 ms of encoding, parsing and
# re-encoding (for the request digest) per round trip; packed with fixed-width fields it is
# one byte string, sent raw after the request line (no hex, no JSON escaping), parsed with
# precompiled structs, and its bytes are canonical, so the request digest hashes them as
# they came (docs/performance.md). Layout, little-endian:
#
#   header   B version=1 | Q fee_sat | I locktime | I tx version | I sequence
#            | Q fee_rate_sat_per_vb | I inputs | I outputs | I approved
#   input    32s txid (as displayed) | I vout | Q amount_sat | I epoch | I chain | I index
#            | I confirmations | B is_coinbase | H script length, then the script
#   output   B purpose | Q amount_sat | B has key path | I epoch | I chain | I index
#            | H withdrawal id length (0xFFFF: none) | H script length, then the id, the script
#   approved Q amount_sat | H withdrawal id length | H script length | I approval length (0:
#            none), then the id, the script, the approval content (canonical JSON, UTF-8)
#
# Strict: every flag 0 or 1, a missing key path all zeros, ids UTF-8 and non-empty, approved
# payouts sorted by withdrawal id, nothing after the last item. One batch, one byte string.

BATCH_VERSION = 1
_HEADER = struct.Struct("<BQIIIQIII")
_INPUT = struct.Struct("<32sIQIIIIBH")
_OUTPUT = struct.Struct("<BQBIIIHH")
_APPROVED = struct.Struct("<QHHI")
_NO_ID = 0xFFFF
_PURPOSES = (OutputPurpose.PAYOUT, OutputPurpose.CHANGE, OutputPurpose.SWEEP)
_PURPOSE_CODE = {purpose: code for code, purpose in enumerate(_PURPOSES)}


def pack_batch(plan: TransactionPlan, approved: Sequence[ApprovedPayout]) -> bytes:
    """The batch's bytes (approved payouts sorted by withdrawal id: the canonical order)."""
    try:
        parts = [
            _HEADER.pack(
                BATCH_VERSION,
                plan.fee_sat,
                plan.locktime,
                plan.version,
                plan.sequence,
                plan.fee_rate_sat_per_vb,
                len(plan.inputs),
                len(plan.outputs),
                len(approved),
            )
        ]
        pack_input, pack_output, pack_approved = _INPUT.pack, _OUTPUT.pack, _APPROVED.pack
        for c in plan.inputs:
            path, script = c.key_path, bytes(c.script_pubkey)
            parts.append(
                pack_input(
                    bytes.fromhex(c.txid),
                    c.vout,
                    c.amount_sat,
                    path.epoch,
                    path.chain,
                    path.index,
                    c.confirmations,
                    c.is_coinbase,
                    len(script),
                )
            )
            parts.append(script)
        for o in plan.outputs:
            script, out_path = bytes(o.script_pubkey), o.key_path
            wid = None if o.withdrawal_id is None else o.withdrawal_id.encode()
            parts.append(
                pack_output(
                    _PURPOSE_CODE[o.purpose],
                    o.amount_sat,
                    out_path is not None,
                    *(
                        (out_path.epoch, out_path.chain, out_path.index)
                        if out_path is not None
                        else (0, 0, 0)
                    ),
                    _NO_ID if wid is None else len(wid),
                    len(script),
                )
            )
            if wid is not None:
                parts.append(wid)
            parts.append(script)
        for a in sorted(approved, key=lambda a: a.withdrawal_id):
            wid, script = a.withdrawal_id.encode(), bytes(a.script_pubkey)
            approval = b"" if a.approval is None else a.approval.encode()
            parts.append(pack_approved(a.amount_sat, len(wid), len(script), len(approval)))
            parts.append(wid)
            parts.append(script)
            parts.append(approval)
    except (struct.error, ValueError, OverflowError) as exc:
        raise WireError(f"the batch does not fit the wire format: {exc}") from None
    return b"".join(parts)


def unpack_batch(data: bytes) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    """The plan and approved payouts of :func:`pack_batch` bytes; WireError unless exact."""
    try:
        return _unpack_batch(data)
    except (struct.error, UnicodeDecodeError):
        raise WireError("the batch is truncated or malformed") from None


def decode_batch(value: object) -> tuple[TransactionPlan, list[ApprovedPayout], bytes]:
    """The ``batch`` parameter (the request's attachment: :func:`pack_batch` bytes): the
    plan, the payouts and the bytes, whose hash names the batch in the request digest."""
    if not isinstance(value, bytes) or not value:
        raise WireError("a sign request carries its batch as an attachment")
    plan, approved = unpack_batch(value)
    return plan, approved, value


def _unpack_batch(data: bytes) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    (version, fee, locktime, tx_version, sequence, rate, n_in, n_out, n_approved) = (
        _HEADER.unpack_from(data, 0)
    )
    if version != BATCH_VERSION:
        raise WireError(f"batch version {version} is not {BATCH_VERSION}")
    inputs, at = _unpack_inputs(data, _HEADER.size, n_in)
    outputs, at = _unpack_outputs(data, at, n_out)
    approved, at = _unpack_approved(data, at, n_approved)
    # Slices past the end come back short without an error: a truncated batch shows here.
    if at != len(data):
        raise WireError("the batch is truncated or has bytes after its last item")
    plan = TransactionPlan(tuple(inputs), tuple(outputs), fee, locktime, tx_version, sequence, rate)
    return plan, approved


def _unpack_inputs(data: bytes, at: int, count: int) -> tuple[list[Coin], int]:
    new, set_fields = _new, _set  # see BUILT_FAST below
    unpack_input, input_size = _INPUT.unpack_from, _INPUT.size
    inputs = []
    for _ in range(count):
        txid, vout, amount, epoch, chain, index, confs, coinbase, n_script = unpack_input(data, at)
        at += input_size
        script = data[at : at + n_script]
        at += n_script
        if coinbase > 1:
            raise WireError("is_coinbase must be 0 or 1")
        path = new(KeyPath)
        set_fields(path, "__dict__", {"epoch": epoch, "chain": chain, "index": index})
        coin = new(Coin)
        set_fields(
            coin,
            "__dict__",
            {
                "txid": txid.hex(),
                "vout": vout,
                "amount_sat": amount,
                "script_pubkey": script,
                "key_path": path,
                "confirmations": confs,
                "is_coinbase": coinbase == 1,
            },
        )
        inputs.append(coin)
    return inputs, at


def _unpack_outputs(data: bytes, at: int, count: int) -> tuple[list[PlannedOutput], int]:
    unpack_output, output_size = _OUTPUT.unpack_from, _OUTPUT.size
    outputs = []
    for _ in range(count):
        code, amount, has_path, epoch, chain, index, n_id, n_script = unpack_output(data, at)
        at += output_size
        if code >= len(_PURPOSES):
            raise WireError("output purpose must be payout, change or sweep")
        if has_path > 1 or (not has_path and (epoch or chain or index)):
            raise WireError("an output's key path is a flag and three numbers (zeros if none)")
        withdrawal_id = None
        if n_id != _NO_ID:
            withdrawal_id = _text(data, at, n_id)
            at += n_id
        script = data[at : at + n_script]
        at += n_script
        path = (
            _built(KeyPath, {"epoch": epoch, "chain": chain, "index": index}) if has_path else None
        )
        outputs.append(
            _built(
                PlannedOutput,
                {
                    "script_pubkey": script,
                    "amount_sat": amount,
                    "purpose": _PURPOSES[code],
                    "withdrawal_id": withdrawal_id,
                    "key_path": path,
                },
            )
        )
    return outputs, at


def _unpack_approved(data: bytes, at: int, count: int) -> tuple[list[ApprovedPayout], int]:
    unpack_approved, approved_size = _APPROVED.unpack_from, _APPROVED.size
    approved = []
    previous = ""
    for _ in range(count):
        amount, n_id, n_script, n_approval = unpack_approved(data, at)
        at += approved_size
        withdrawal_id = _text(data, at, n_id)
        at += n_id
        script = data[at : at + n_script]
        at += n_script
        approval = _approval(data[at : at + n_approval]) if n_approval else None
        at += n_approval
        if amount < 1:
            raise WireError("an approved payout's amount_sat must be an integer >= 1")
        if withdrawal_id < previous:
            raise WireError("approved payouts must be sorted by withdrawal id")
        previous = withdrawal_id
        approved.append(
            _built(
                ApprovedPayout,
                {
                    "withdrawal_id": withdrawal_id,
                    "script_pubkey": script,
                    "amount_sat": amount,
                    "approval": approval,
                },
            )
        )
    return approved, at


_T = TypeVar("_T")
_new, _set = object.__new__, object.__setattr__
# The frozen value classes unpack_batch builds, 3,000-4,000 of them a batch. Their generated
# __init__ sets each field with object.__setattr__ (they are frozen): ~0.8 us for a Coin, most
# of the batch's decoding time. Built from the field dict in one step they cost a third and
# are equal, field for field (tests/signer/test_wire.py checks that, and that none of these
# classes has a __post_init__ this would skip).
BUILT_FAST = (KeyPath, Coin, PlannedOutput, ApprovedPayout)


def _built(cls: type[_T], fields: dict[str, Any]) -> _T:
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    return obj


def _approval(raw: bytes) -> str:
    """An approved payout's approval content: a JSON object in its canonical form only, so
    that one content has one encoding (and the batch's bytes stay canonical)."""
    try:
        content = json.loads(raw)
    except ValueError:
        raise WireError("an approval content must be a JSON object") from None
    if not isinstance(content, dict) or canonical_json(content) != raw:
        raise WireError("an approval content must be a JSON object in canonical form")
    return raw.decode()


def _text(data: bytes, at: int, n: int) -> str:
    if n == 0:
        raise WireError("a withdrawal id must be a non-empty string")
    return data[at : at + n].decode()


def encode_signed(tx: SignedTransaction) -> dict[str, Any]:
    return {"txid": tx.txid, "raw": tx.raw.hex(), "fee_sat": tx.fee_sat, "vsize": tx.vsize}


def decode_signed(value: object) -> SignedTransaction:
    obj = _dict(value, "signed transaction")
    return SignedTransaction(
        txid=_str(obj, "txid"),
        raw=_hex(obj, "raw"),
        fee_sat=_int(obj, "fee_sat"),
        vsize=_int(obj, "vsize"),
    )


def decode_epoch(value: object) -> EpochKeys:
    obj = _dict(value, "epoch")
    return EpochKeys(
        wallet=_str(obj, "wallet"),
        epoch=_int(obj, "epoch", minimum=1),
        account_xpub=_str(obj, "account_xpub"),
        master_fingerprint=_str(obj, "master_fingerprint"),
    )
