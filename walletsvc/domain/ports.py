"""Ports: what the use cases need from the outside world. Adapters implement them.

Every external system has one of these, a real adapter (walletsvc.chain.*, walletsvc.keys.*)
and, where unit tests want one, a fake. Integration tests always use the real adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .network import Network
from .transaction import ApprovedPayout, SignedTransaction, TransactionPlan


@dataclass(frozen=True)
class BlockRef:
    height: int
    hash: str  # big-endian display hex, as Bitcoin Core prints it


@dataclass(frozen=True)
class AcceptResult:
    txid: str
    allowed: bool
    reason: str | None = None


class ChainBackend(Protocol):
    """A view of one Bitcoin network: enough to scan blocks, broadcast and estimate fees.

    ``broadcast`` is idempotent: sending a transaction the node already has in its mempool or
    in a block returns its txid instead of failing, so a restarted worker can always re-send
    the signed transaction it stored before a crash. Other refusals raise ChainRejected.
    """

    @property
    def network(self) -> Network: ...

    def tip(self) -> BlockRef: ...

    def block_hash(self, height: int) -> str | None:
        """The active chain's block hash at ``height``, or None above the tip."""
        ...

    def block_bytes(self, block_hash: str) -> bytes: ...

    def broadcast(self, raw_tx: bytes, *, max_fee_rate_sat_per_vb: int | None = None) -> str:
        """Send ``raw_tx``. ``max_fee_rate_sat_per_vb`` raises the node's fee-rate guard for
        this one transaction (the theft shield outbids a thief above our usual ceiling)."""
        ...

    def test_accept(self, raw_tx: bytes) -> AcceptResult: ...

    def mempool_txids(self) -> set[str]: ...

    def fee_rate_sat_per_vb(self, target_blocks: int) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpentOutput:
    script_pubkey: bytes
    amount_sat: int


class ScriptVerifier(Protocol):
    """Bitcoin Core's consensus script check (libbitcoinkernel), for every input of a tx."""

    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        """Raise VerificationFailed naming the first input whose script does not verify."""
        ...


@dataclass(frozen=True)
class MempoolEntry:
    """A transaction in the node's mempool, with what a replacement of it must outbid."""

    txid: str
    raw: bytes
    fee_sat: int
    vsize: int
    # This transaction's fee plus its mempool descendants' (Core's ``fees.descendant``): a
    # replacement evicts them all and must pay for all of them (BIP125 rule 3).
    descendant_fees_sat: int


# Called with a txid when a transaction enters the mempool; may run on any thread, so a
# listener only records the txid and returns (the chain may hold its own lock meanwhile).
MempoolListener = Callable[[str], None]


@runtime_checkable
class MempoolSource(Protocol):
    """What the mempool watcher needs from a node: new transactions as they arrive.

    ``subscribe`` delivers txids pushed by the node (Core's ZMQ ``rawtx``/``sequence``, the
    embedded chain's own notification); ``mempool_spenders`` is the polling fallback that
    also catches anything a push missed: which mempool transactions spend these outpoints
    (Core's ``gettxspendingprevout``), one call for all our coins however full the mempool
    is. ``mempool_transaction`` and ``mempool_entry`` are None once the tx has left.
    """

    def subscribe(self, listener: MempoolListener) -> None: ...

    def mempool_spenders(self, outpoints: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The mempool transaction spending each of ``outpoints`` that one spends."""
        ...

    def mempool_transaction(self, txid: str) -> bytes | None: ...

    def mempool_entry(self, txid: str) -> MempoolEntry | None: ...


@dataclass(frozen=True)
class EpochKeys:
    """The public half of a key epoch the signer made: all the service needs to derive."""

    wallet: str
    epoch: int
    account_xpub: str
    master_fingerprint: str


@dataclass(frozen=True)
class StaffEnrolment:
    """The signer's answer to an enrolment: the secret and its URI once (None when an
    existing member was changed or a secret imported). Shown to the member, never stored."""

    staff_id: str
    totp_secret: str | None
    otpauth_uri: str | None

    def __repr__(self) -> str:
        return f"StaffEnrolment({self.staff_id}, secret={'<hidden>' if self.totp_secret else None})"


@dataclass(frozen=True)
class DecisionReceipt:
    """The signer recorded a decision: on this content digest, with this TOTP step (None:
    a passkey)."""

    digest: str
    totp_step: int | None


class SignerPort(Protocol):
    """The signer process, as the service sees it (walletsvc.signer.client.SignerClient).

    It holds every seed; the service holds only public keys. It raises SigningRefused when it
    refuses (its own rules, from its own ledger), Frozen when the wallet is frozen in it,
    VerificationFailed when the kernel refuses a signature, and DependencyUnavailable when it
    cannot be reached.
    """

    def new_epoch(self, wallet: str, epoch: int) -> EpochKeys:
        """The seed of ``wallet``'s key epoch ``epoch`` (made now, or the one made before)."""
        ...

    def sign(
        self,
        *,
        wallet: str,
        kind: str,
        plan: TransactionPlan,
        approved: Sequence[ApprovedPayout],
        sweep_scripts: frozenset[bytes] = frozenset(),
        max_fee_sat: int | None = None,
        audit_head: tuple[int, str] | None = None,
    ) -> SignedTransaction:
        """``max_fee_sat`` may only lower the signer's own cap (the theft shield's answers:
        the shield budget of the signer's policy copy; everything else: its configured cap).
        ``audit_head`` (seq, hash) is the audit log's head at this moment: the signer anchors
        it, or refuses the signature if it went back or changed."""
        ...

    def freeze(self, wallet: str | None, reason: str) -> None:
        """Stop the signer signing for ``wallet`` (None: every wallet) at once."""
        ...

    def apply_governed(
        self, kind: str, content: dict[str, Any], payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A governed change (policy, allowlist, cold destination, unfreeze) with the exact
        content staff approved; the signer counts the quorum in its own ledger and refuses
        (SigningRefused) without it. A tightening applies at once."""
        ...

    def rotate_epoch(self, content: dict[str, Any]) -> EpochKeys:
        """The next key epoch, made by the signer for an approved key rotation's content."""
        ...

    def anchor_audit(self, seq: int, head_hash: str) -> None:
        """Hand the signer the audit head the service just wrote."""
        ...

    def audit_anchors(self) -> list[tuple[int, str]]:
        """Every audit head the signer recorded, oldest first (``audit verify`` checks each)."""
        ...

    def status(self) -> dict[str, Any]: ...

    # People: the signer holds the TOTP secrets and records the decisions it verified.

    def enrol_staff(
        self,
        *,
        staff_id: str,
        username: str,
        role: str,
        groups: Sequence[str],
        totp_secret: str | None = None,
    ) -> StaffEnrolment:
        """Enrol (the signer makes the secret, answered once) or change a member; during
        genesis on the service's word (``totp_secret`` imports an existing one), after it
        only on a quorum recorded in the signer."""
        ...

    def reset_totp(self, staff_id: str, content: dict[str, Any]) -> StaffEnrolment:
        """A new secret for a member, on the quorum of decisions on ``content``."""
        ...

    def disable_staff(self, staff_id: str) -> None: ...

    def close_genesis(self, *, only_if_quorums_met: bool = False) -> bool:
        """End the trusted enrolment; True while genesis is still open afterwards."""
        ...

    def check_totp(self, staff_id: str, code: str) -> int:
        """The accepted time step; StepUpFailed (StepUpReplayed), Forbidden, AccountLocked."""
        ...

    def record_decision(
        self,
        *,
        staff_id: str,
        kind: str,
        content: dict[str, Any],
        decision: str,
        totp: str | None = None,
        passkey: str | None = None,
    ) -> DecisionReceipt:
        """Have the signer check the step-up and record the decision."""
        ...

    def register_passkey(
        self, *, staff_id: str, credential: str, challenge: bytes, totp: str
    ) -> str: ...

    def remove_passkey(self, staff_id: str, credential_id: str) -> None: ...
