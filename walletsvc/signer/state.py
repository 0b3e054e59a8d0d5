"""The signer's state: the fold of its ledger records, and nothing else.

``SignerState.apply`` is the only way state changes, used alike when the ledger is replayed
at start and after each new record is appended, so what the signer knows after a restart is
exactly what it knew before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from walletsvc.policy.document import PolicyDocument, parse_policy, policy_hash
from walletsvc.policy.engine import HeldPayout

from . import evidence
from .evidence import Evidence
from .ledger import Record

ALL_WALLETS = "*"

# Record types.
INIT = "init"
POLICY = "policy"
EPOCH = "epoch"
SIGNED = "signed"
FREEZE = "freeze"
UNFREEZE = "unfreeze"
COLD = "cold"
AUDIT_ANCHOR = "audit_anchor"


@dataclass(frozen=True)
class SeedEntry:
    sealed: str  # keys.keystore.EncryptedSeed.to_string(), under the signer key's seed vault
    account_xpub: str
    master_fingerprint: str


@dataclass(frozen=True)
class SignedTx:
    """A transaction this signer signed: what it paid and which coins it spent."""

    txid: str
    wallet: str
    withdrawal_ids: frozenset[str]
    inputs: frozenset[str]  # "txid:vout"
    request_digest: str
    result: dict[str, Any]  # the wire answer (txid, raw, fee_sat, vsize), for exact replays


@dataclass
class SignerState:
    network: str | None = None
    policy: PolicyDocument | None = None
    policy_hash: str | None = None
    seeds: dict[tuple[str, int], SeedEntry] = field(default_factory=dict)
    txs: dict[str, SignedTx] = field(default_factory=dict)
    by_request: dict[str, SignedTx] = field(default_factory=dict)
    paid: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    spent: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    history: dict[str, list[HeldPayout]] = field(default_factory=lambda: defaultdict(list))
    frozen: dict[str, str] = field(default_factory=dict)  # wallet (or "*") -> reason
    cold: dict[str, str] = field(default_factory=dict)  # wallet -> cold destination text
    audit_anchor: tuple[int, str] | None = None  # the last audit head recorded
    # Every audit head recorded, seq -> hash: `audit verify` checks each (walletsvc.signer.anchors).
    audit_anchors: dict[int, str] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)  # staff and verified decisions

    def apply(self, record: Record) -> None:
        handler = _HANDLERS.get(record.type)
        if handler is None and record.type in evidence.HANDLERS:
            evidence.HANDLERS[record.type](self.evidence, record.body, record.at)
            return
        if handler is None:
            raise ValueError(f"unknown ledger record type {record.type!r}")
        handler(self, record.body, record.at)

    def epochs_of(self, wallet: str) -> list[int]:
        return sorted(epoch for (name, epoch) in self.seeds if name == wallet)

    def frozen_reason(self, wallet: str) -> str | None:
        return self.frozen.get(ALL_WALLETS) or self.frozen.get(wallet)


def _init(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.network = body["network"]


def _policy(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.policy = parse_policy(body["document"])
    state.policy_hash = policy_hash(state.policy)


def _epoch(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.seeds[(body["wallet"], body["epoch"])] = SeedEntry(
        body["sealed"], body["account_xpub"], body["master_fingerprint"]
    )


def _signed(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    tx = SignedTx(
        txid=body["result"]["txid"],
        wallet=body["wallet"],
        withdrawal_ids=frozenset(p["withdrawal_id"] for p in body["payouts"]),
        inputs=frozenset(body["inputs"]),
        request_digest=body["request_digest"],
        result=body["result"],
    )
    state.txs[tx.txid] = tx
    state.by_request[tx.request_digest] = tx
    for outpoint in tx.inputs:
        state.spent[outpoint].append(tx.txid)
    for payout in body["payouts"]:
        if payout.get("new", True):  # a replacement's payouts were counted by the original
            state.history[tx.wallet].append(
                HeldPayout(payout["amount_sat"], payout["destination"], None, at)
            )
        state.paid[payout["withdrawal_id"]].append(tx.txid)


def _freeze(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.frozen[body["wallet"] or ALL_WALLETS] = body["reason"]


def _unfreeze(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.frozen.pop(body["wallet"] or ALL_WALLETS, None)


def _cold(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.cold[body["wallet"]] = body["destination"]


def _anchor(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.audit_anchor = (body["seq"], body["hash"])
    state.audit_anchors[body["seq"]] = body["hash"]


_HANDLERS = {
    INIT: _init,
    POLICY: _policy,
    EPOCH: _epoch,
    SIGNED: _signed,
    FREEZE: _freeze,
    UNFREEZE: _unfreeze,
    COLD: _cold,
    AUDIT_ANCHOR: _anchor,
}
