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
# Governed changes, each with quorum evidence the signer verified (walletsvc.signer.governed).
GOVERNED_POLICY = "governed_policy"
ALLOWLIST_ADD = "allowlist_add"
ALLOWLIST_REMOVE = "allowlist_remove"
GOVERNED_COLD = "governed_cold"
GOVERNED_UNFREEZE = "governed_unfreeze"
ROTATION = "rotation"


@dataclass(frozen=True)
class AllowlistCopy:
    """One destination the signer learned with quorum evidence."""

    wallet: str
    address: str
    active_since: datetime  # the signer's clock when it learned the quorum
    digest: str


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
    policy: PolicyDocument | None = None  # the default copy (a document naming no wallet)
    policy_hash: str | None = None
    wallet_policies: dict[str, PolicyDocument] = field(default_factory=dict)  # by wallet name
    seeds: dict[tuple[str, int], SeedEntry] = field(default_factory=dict)
    txs: dict[str, SignedTx] = field(default_factory=dict)
    by_request: dict[str, SignedTx] = field(default_factory=dict)
    paid: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    spent: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    history: dict[str, list[HeldPayout]] = field(default_factory=lambda: defaultdict(list))
    frozen: dict[str, str] = field(default_factory=dict)  # wallet (or "*") -> reason
    frozen_at: dict[str, datetime] = field(default_factory=dict)  # its newest freeze
    cold: dict[str, str] = field(default_factory=dict)  # wallet -> cold destination text
    audit_anchor: tuple[int, str] | None = None  # the last audit head recorded
    # Every audit head recorded, seq -> hash: `audit verify` checks each (walletsvc.signer.anchors).
    audit_anchors: dict[int, str] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)  # staff and verified decisions
    # Governed changes (walletsvc.signer.governed), each learned with quorum evidence.
    allowlist: dict[tuple[str, str], AllowlistCopy] = field(default_factory=dict)
    governed_digests: set[str] = field(default_factory=set)  # evidence used (once each)
    rotations: dict[str, int] = field(default_factory=dict)  # digest -> the epoch it made
    rotations_allowed: set[tuple[str, int]] = field(default_factory=set)  # (wallet, epoch)

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

    def set_policy(self, document: PolicyDocument) -> None:
        """A document naming a wallet is that wallet's copy; one naming none, the default."""
        if document.wallet is not None:
            self.wallet_policies[document.wallet] = document
        else:
            self.policy, self.policy_hash = document, policy_hash(document)

    def policy_for(self, wallet: str | None) -> PolicyDocument | None:
        """The copy that governs ``wallet``: its own, else the default (as in the service)."""
        own = self.wallet_policies.get(wallet) if wallet is not None else None
        return own if own is not None else self.policy

    def frozen_reason(self, wallet: str) -> str | None:
        return self.frozen.get(ALL_WALLETS) or self.frozen.get(wallet)


def _init(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.network = body["network"]


def _policy(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.set_policy(parse_policy(body["document"]))


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
    state.frozen_at[body["wallet"] or ALL_WALLETS] = at


def _unfreeze(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.frozen.pop(body["wallet"] or ALL_WALLETS, None)
    state.frozen_at.pop(body["wallet"] or ALL_WALLETS, None)


def _cold(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.cold[body["wallet"]] = body["destination"]


def _anchor(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.audit_anchor = (body["seq"], body["hash"])
    state.audit_anchors[body["seq"]] = body["hash"]


def _fold_policy(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.set_policy(parse_policy(body["document"]))
    state.governed_digests.add(body["digest"])


def _fold_allowlist_add(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    key = (body["wallet"], body["address"])
    state.allowlist[key] = AllowlistCopy(body["wallet"], body["address"], at, body["digest"])
    state.governed_digests.add(body["digest"])


def _fold_allowlist_remove(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.allowlist.pop((body["wallet"], body["address"]), None)
    state.governed_digests.add(body["digest"])


def _fold_cold(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.cold[body["wallet"]] = body["destination"]
    state.governed_digests.add(body["digest"])


def _fold_unfreeze(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    for wallet in body["wallets"]:
        state.frozen.pop(wallet, None)
        state.frozen_at.pop(wallet, None)
    state.governed_digests.add(body["digest"])


def _fold_rotation(state: SignerState, body: dict[str, Any], at: datetime) -> None:
    state.rotations[body["digest"]] = body["epoch"]
    state.rotations_allowed.add((body["wallet"], body["epoch"]))
    state.governed_digests.add(body["digest"])


_HANDLERS = {
    INIT: _init,
    POLICY: _policy,
    EPOCH: _epoch,
    SIGNED: _signed,
    FREEZE: _freeze,
    UNFREEZE: _unfreeze,
    COLD: _cold,
    AUDIT_ANCHOR: _anchor,
    GOVERNED_POLICY: _fold_policy,
    ALLOWLIST_ADD: _fold_allowlist_add,
    ALLOWLIST_REMOVE: _fold_allowlist_remove,
    GOVERNED_COLD: _fold_cold,
    GOVERNED_UNFREEZE: _fold_unfreeze,
    ROTATION: _fold_rotation,
}
