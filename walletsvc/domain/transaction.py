"""A transaction plan: what we intend to sign, in plain values the signer can re-check.

The worker builds a plan (coin selection, outputs, fee); the signer receives the plan together
with the approvals it must match and refuses anything else. Nothing here touches keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# BIP125: any sequence below 0xfffffffe signals replaceability; this one also keeps nLockTime
# enforced, so anti-fee-sniping locktimes work.
RBF_SEQUENCE = 0xFFFFFFFD
TX_VERSION = 2

RECEIVE_CHAIN = 0
CHANGE_CHAIN = 1


class OutputPurpose(StrEnum):
    PAYOUT = "payout"
    CHANGE = "change"
    SWEEP = "sweep"


@dataclass(frozen=True)
class KeyPath:
    """Where a hot key lives: key epoch, BIP84 chain (0 receive, 1 change) and index."""

    epoch: int
    chain: int
    index: int


@dataclass(frozen=True)
class Coin:
    """An unspent output of ours, as the scanner recorded it."""

    txid: str  # display hex
    vout: int
    amount_sat: int
    script_pubkey: bytes
    key_path: KeyPath
    confirmations: int
    is_coinbase: bool = False

    @property
    def outpoint(self) -> tuple[str, int]:
        return (self.txid, self.vout)


@dataclass(frozen=True)
class PlannedOutput:
    script_pubkey: bytes
    amount_sat: int
    purpose: OutputPurpose
    # For payouts: the withdrawal id it pays; for change: the key path of our change address.
    withdrawal_id: str | None = None
    key_path: KeyPath | None = None


@dataclass(frozen=True)
class TransactionPlan:
    inputs: tuple[Coin, ...]
    outputs: tuple[PlannedOutput, ...]
    fee_sat: int
    locktime: int = 0
    version: int = TX_VERSION
    sequence: int = RBF_SEQUENCE
    fee_rate_sat_per_vb: int = field(default=0)

    @property
    def input_total(self) -> int:
        return sum(c.amount_sat for c in self.inputs)

    @property
    def output_total(self) -> int:
        return sum(o.amount_sat for o in self.outputs)


@dataclass(frozen=True)
class ApprovedPayout:
    """What the signer may pay: one approved withdrawal.

    ``approval`` is the canonical JSON of the content its approvers reviewed (the payout's
    approval content), carried to the signer for a payout above an approval tier: the signer
    checks it names this payout, hashes it itself and counts the decisions it recorded on
    that digest. None for a payout that needed no approval."""

    withdrawal_id: str
    script_pubkey: bytes
    amount_sat: int
    approval: str | None = None


@dataclass(frozen=True)
class SignedTransaction:
    txid: str
    raw: bytes
    fee_sat: int
    vsize: int
