"""Plan builders for signer tests: real scripts derived from the wallet's own xpubs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from walletsvc.domain.transaction import (
    CHANGE_CHAIN,
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.keys.hd import AccountXpub


def fake_txid(n: int) -> str:
    return hashlib.sha256(f"funding-{n}".encode()).hexdigest()


def foreign_script(n: int, kind: str = "p2wpkh") -> bytes:
    """A destination that is not ours: P2WPKH, P2WSH, P2TR or P2PKH of a hash of ``n``."""
    h = hashlib.sha256(f"dest-{n}".encode()).digest()
    if kind == "p2wpkh":
        return b"\x00\x14" + h[:20]
    if kind == "p2wsh":
        return b"\x00\x20" + h
    if kind == "p2tr":
        return b"\x51\x20" + h
    if kind == "p2pkh":
        return b"\x76\xa9\x14" + h[:20] + b"\x88\xac"
    raise ValueError(kind)


@dataclass
class PlanSpec:
    """Inputs (epoch, chain, index, amount), payouts (script, amount), change, sweeps, fee."""

    inputs: Sequence[tuple[int, int, int, int]]
    payouts: Sequence[tuple[bytes, int]] = ()
    change: tuple[int, int, int] | None = None  # (epoch, index, amount) on the change chain
    sweeps: Sequence[tuple[bytes, int]] = ()
    locktime: int = 0
    version: int = 2


def build(
    xpubs: dict[int, AccountXpub], spec: PlanSpec
) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    coins = tuple(
        Coin(
            txid=fake_txid(n),
            vout=n % 4,
            amount_sat=amount,
            script_pubkey=xpubs[epoch].script_pubkey(chain, index),
            key_path=KeyPath(epoch, chain, index),
            confirmations=6,
        )
        for n, (epoch, chain, index, amount) in enumerate(spec.inputs)
    )
    outputs: list[PlannedOutput] = []
    approvals: list[ApprovedPayout] = []
    for n, (script, amount) in enumerate(spec.payouts):
        outputs.append(PlannedOutput(script, amount, OutputPurpose.PAYOUT, withdrawal_id=f"wd-{n}"))
        approvals.append(ApprovedPayout(f"wd-{n}", script, amount))
    for script, amount in spec.sweeps:
        outputs.append(PlannedOutput(script, amount, OutputPurpose.SWEEP))
    if spec.change is not None:
        epoch, index, amount = spec.change
        path = KeyPath(epoch, CHANGE_CHAIN, index)
        outputs.append(
            PlannedOutput(
                xpubs[epoch].script_pubkey(CHANGE_CHAIN, index),
                amount,
                OutputPurpose.CHANGE,
                key_path=path,
            )
        )
    fee = sum(c.amount_sat for c in coins) - sum(o.amount_sat for o in outputs)
    plan = TransactionPlan(
        inputs=coins,
        outputs=tuple(outputs),
        fee_sat=fee,
        locktime=spec.locktime,
        version=spec.version,
    )
    return plan, approvals
