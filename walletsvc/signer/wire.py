"""The signer's wire format, shared by the client (service side) and the server (signer side).

One JSON object per line each way: ``{"id", "op", "params"}`` in, ``{"id", "ok": true,
"result"}`` or ``{"id", "ok": false, "error": {"code", "message"}}`` out. Plain values only:
scripts and raw transactions travel as hex, amounts as integer satoshis. Decoding is strict;
anything malformed is a ``WireError``, which the server answers as ``invalid_request``.
"""

from __future__ import annotations

import json
from typing import Any

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


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(f"{what} must be a list")
    return value


def encode_path(path: KeyPath | None) -> list[int] | None:
    return None if path is None else [path.epoch, path.chain, path.index]


def decode_path(value: object) -> KeyPath | None:
    if value is None:
        return None
    items = _list(value, "key_path")
    if len(items) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise WireError("key_path must be [epoch, chain, index]")
    return KeyPath(items[0], items[1], items[2])


def encode_plan(plan: TransactionPlan) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "txid": c.txid,
                "vout": c.vout,
                "amount_sat": c.amount_sat,
                "script_pubkey": bytes(c.script_pubkey).hex(),
                "key_path": encode_path(c.key_path),
                "confirmations": c.confirmations,
                "is_coinbase": c.is_coinbase,
            }
            for c in plan.inputs
        ],
        "outputs": [
            {
                "script_pubkey": bytes(o.script_pubkey).hex(),
                "amount_sat": o.amount_sat,
                "purpose": o.purpose.value,
                "withdrawal_id": o.withdrawal_id,
                "key_path": encode_path(o.key_path),
            }
            for o in plan.outputs
        ],
        "fee_sat": plan.fee_sat,
        "locktime": plan.locktime,
        "version": plan.version,
        "sequence": plan.sequence,
        "fee_rate_sat_per_vb": plan.fee_rate_sat_per_vb,
    }


def decode_plan(value: object) -> TransactionPlan:
    obj = _dict(value, "plan")
    inputs = []
    for raw in _list(obj.get("inputs"), "plan.inputs"):
        c = _dict(raw, "input")
        path = decode_path(c.get("key_path"))
        if path is None:
            raise WireError("every input needs a key_path")
        inputs.append(
            Coin(
                txid=_str(c, "txid"),
                vout=_int(c, "vout"),
                amount_sat=_int(c, "amount_sat"),
                script_pubkey=_hex(c, "script_pubkey"),
                key_path=path,
                confirmations=_int(c, "confirmations"),
                is_coinbase=bool(c.get("is_coinbase", False)),
            )
        )
    outputs = []
    for raw in _list(obj.get("outputs"), "plan.outputs"):
        o = _dict(raw, "output")
        try:
            purpose = OutputPurpose(str(o.get("purpose")))
        except ValueError:
            raise WireError("output purpose must be payout, change or sweep") from None
        withdrawal_id = o.get("withdrawal_id")
        if withdrawal_id is not None and not isinstance(withdrawal_id, str):
            raise WireError("withdrawal_id must be a string or null")
        outputs.append(
            PlannedOutput(
                script_pubkey=_hex(o, "script_pubkey"),
                amount_sat=_int(o, "amount_sat"),
                purpose=purpose,
                withdrawal_id=withdrawal_id,
                key_path=decode_path(o.get("key_path")),
            )
        )
    return TransactionPlan(
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        fee_sat=_int(obj, "fee_sat"),
        locktime=_int(obj, "locktime"),
        version=_int(obj, "version"),
        sequence=_int(obj, "sequence"),
        fee_rate_sat_per_vb=_int(obj, "fee_rate_sat_per_vb"),
    )


def encode_approved(approved: ApprovedPayout) -> dict[str, Any]:
    encoded: dict[str, Any] = {
        "withdrawal_id": approved.withdrawal_id,
        "script_pubkey": bytes(approved.script_pubkey).hex(),
        "amount_sat": approved.amount_sat,
    }
    if approved.approval is not None:
        encoded["approval"] = json.loads(approved.approval)
    return encoded


def decode_approved(value: object) -> ApprovedPayout:
    obj = _dict(value, "approved payout")
    approval = obj.get("approval")
    return ApprovedPayout(
        withdrawal_id=_str(obj, "withdrawal_id"),
        script_pubkey=_hex(obj, "script_pubkey"),
        amount_sat=_int(obj, "amount_sat", minimum=1),
        approval=None if approval is None else canonical_json(_dict(approval, "approval")).decode(),
    )


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
