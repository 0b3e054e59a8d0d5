"""The signer's decisions: every operation it answers, judged from its own ledger only.

Nothing a request says about the past is believed. Whether a withdrawal was paid, whether a
coin was spent, how much left the wallet this hour, whether the wallet is frozen, which
policy applies: all of it comes from the ledger (:mod:`walletsvc.signer.state`). A request
only proposes a transaction; the signer decides, records the decision durably, then answers.

The rules before a signature (docs/architecture.md, "The signer"):

* an exact replay of a request it already answered gets the same signed bytes back;
* a withdrawal id it paid before, or a coin it spent before, is refused, unless the new
  transaction is a replacement of its own that pays exactly the same withdrawal ids and
  conflicts with every earlier transaction paying them (so at most one can confirm), or every
  non-change output goes to the cold destination (sweeps, rotation, the theft shield);
* a frozen wallet signs only transactions whose every non-change output goes to cold storage;
* every newly paid withdrawal passes the signer's own copy of the policy (per-payout maximum,
  velocity windows over what *it* signed, by *its* clock; denylist; approval tiers) with the
  pure engine the service uses (:mod:`walletsvc.policy.engine`);
* every sweep output pays an address of the signer's own copy of the wallet's cold
  destination (it derives the script itself); without one, nothing goes "to cold";
* the fee is capped by the signer's own setting, not the request's;
* then HotSigner re-derives every input and change key and libbitcoinkernel checks every
  signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from walletsvc.domain.address import script_to_address
from walletsvc.domain.canonical import content_digest
from walletsvc.domain.errors import SigningRefused, VerificationFailed
from walletsvc.domain.network import Network
from walletsvc.domain.ports import ScriptVerifier
from walletsvc.domain.transaction import ApprovedPayout, OutputPurpose, TransactionPlan
from walletsvc.keys.descriptor import ColdDestination, parse_cold_destination
from walletsvc.keys.errors import InvalidMnemonic
from walletsvc.keys.kek import Kek
from walletsvc.keys.keystore import EncryptedSeed, generate_seed, import_mnemonic
from walletsvc.keys.signer import HotSigner
from walletsvc.policy.document import PolicyDocument, canonical_dict, normalize_address, policy_hash
from walletsvc.policy.document import Shield as ShieldPolicy
from walletsvc.policy.engine import (
    AllowlistEntry,
    HeldPayout,
    PayoutRequest,
    Required,
    evaluate,
    history_horizon,
)
from walletsvc.policy.running import RunningTotals

from . import anchors, governed, wire
from .errors import SignerError, refuse
from .ledger import Ledger
from .people import People, PeopleConfig
from .state import (
    AUDIT_ANCHOR,
    COLD,
    EPOCH,
    FREEZE,
    INIT,
    POLICY,
    SIGNED,
    SignedTx,
    SignerState,
)

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
# How far past the highest cold address index seen so far the signer derives, looking for a
# sweep's script (the service takes the next index for each sweep).
COLD_SEARCH = 1_000
COLD_CHUNK = 100
WITHDRAWAL_KIND = "withdrawal"  # the approval kind of payouts (walletsvc.payouts.intake.KIND)


@dataclass(frozen=True)
class SignerConfig:
    network: Network
    max_fee_sat: int
    people: PeopleConfig = field(default_factory=PeopleConfig)


class SignerCore:
    """Answers one request at a time (the server holds ``lock`` around :meth:`handle`)."""

    def __init__(
        self,
        ledger: Ledger,
        key: Kek,
        verifier: ScriptVerifier,
        config: SignerConfig,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.ledger = ledger
        self.config = config
        self._vault = key.seed_vault()
        self._hot = HotSigner(self._vault, verifier)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.lock = threading.Lock()
        self._cold: dict[str, _ColdScripts] = {}
        self.files_lock: int | None = None  # the open lock file (walletsvc.signer.server)
        self.state = SignerState()
        for record in ledger:
            self.state.apply(record)
        self.people = People(self.state, self._vault, self._record, self._clock, config.people)
        if self.state.network is None:
            self._record(INIT, {"network": config.network.value})
        elif self.state.network != config.network.value:
            raise RuntimeError(
                f"the signer ledger is for {self.state.network}, not {config.network.value}"
            )

    def __repr__(self) -> str:
        return f"SignerCore({self.ledger!r})"

    def wipe(self) -> None:
        """Forget the signing engine's decrypted keys (its cache: keys/keycache.py)."""
        self._hot.wipe()

    # -- local set-up (trust root: whoever holds the signer's files) -----------------------

    def install_first_policy(self, policy: PolicyDocument) -> bool:
        """Install the first policy; a no-op once the ledger holds one. Local only."""
        if self.state.policy is not None:
            return False
        self._record(POLICY, {"document": canonical_dict(policy), "source": "local-init"})
        return True

    def install_policy(self, policy: PolicyDocument) -> bool:
        """Replace the signer's policy copy (the document's wallet's, or the default); local
        only (``walletsvc signer set-policy``, the trust root like set-cold). Over the socket
        a policy arrives only as a governed change (``apply_governed``, with quorum evidence
        the signer verifies). False when the ledger holds this policy already."""
        wallet = policy.wallet
        current = self.state.wallet_policies.get(wallet) if wallet else self.state.policy
        if current is not None and policy_hash(current) == policy_hash(policy):
            return False
        self._record(POLICY, {"document": canonical_dict(policy), "source": "local"})
        return True

    def install_cold(self, wallet: str, text: str) -> ColdDestination:
        """Set the wallet's cold destination; local only (never over the socket), so the
        API host cannot point "to cold" anywhere. Re-installing the same one is a no-op."""
        _wallet_name({"wallet": wallet})
        parsed = parse_cold_destination(text, self.network)
        if self.state.cold.get(wallet) != parsed.descriptor:
            body = {"wallet": wallet, "destination": parsed.descriptor, "source": "local"}
            self._record(COLD, body)
        return parsed

    def import_words(self, wallet: str, words: str) -> dict[str, Any]:
        """Key epoch 1 of ``wallet`` from its recovery words (a restore). Local only, never
        over the socket: whoever could import a seed they know could take its deposits.
        Importing the same words again is a no-op; other words for an epoch the ledger
        holds are refused."""
        _wallet_name({"wallet": wallet})
        self._import_seed(wallet, 1, words, expected_xpub=None, source="local-import")
        return self.new_epoch({"wallet": wallet, "epoch": 1})

    def import_legacy_words(
        self, wallet: str, epoch: int, words: str, account_xpub: str
    ) -> dict[str, Any]:
        """A key epoch made before the signer held seeds, from its recovery words, after
        genesis closed. Local only (``walletsvc signer import-seed``, the trust root like
        set-cold); the words must derive ``account_xpub``, the one the service holds."""
        return self._import_seed(
            _wallet_name({"wallet": wallet}),
            _epoch_number({"epoch": epoch}),
            words,
            expected_xpub=account_xpub,
            source="local-legacy-import",
        )

    # -- the operations --------------------------------------------------------------------

    def handle(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = _OPS.get(op)
        if handler is None:
            raise SignerError(wire.INVALID_REQUEST, f"unknown operation {op!r}")
        try:
            return handler(self, params)
        except wire.WireError as exc:
            raise SignerError(wire.INVALID_REQUEST, str(exc)) from None
        except SigningRefused as exc:
            raise refuse(exc.message) from None
        except VerificationFailed as exc:
            raise SignerError(wire.VERIFICATION_FAILED, exc.message) from None

    def status(self, params: dict[str, Any]) -> dict[str, Any]:
        wallets: dict[str, list[int]] = {}
        for wallet, epoch in self.state.seeds:
            wallets.setdefault(wallet, []).append(epoch)
        anchor = self.state.audit_anchor
        return {
            "network": self.state.network,
            "records": len(self.ledger.records),
            "policy_hash": self.state.policy_hash,
            "frozen": dict(self.state.frozen),
            "wallets": {w: sorted(e) for w, e in wallets.items()},
            "cold": dict(self.state.cold),
            "wallet_policies": {
                w: policy_hash(d) for w, d in sorted(self.state.wallet_policies.items())
            },
            "allowlist": _allowlist_view(self.state),
            "signed_transactions": len(self.state.txs),
            "audit_anchor": None if anchor is None else {"seq": anchor[0], "hash": anchor[1]},
            "genesis_open": self.state.evidence.genesis_open,
            "staff": len(self.state.evidence.staff),
            "quorums_met": self.people.quorums_met(),
        }

    def new_epoch(self, params: dict[str, Any]) -> dict[str, Any]:
        """Make the seed of ``wallet``'s key epoch ``epoch``; answer its public keys only.

        Idempotent (a service that crashed after asking gets the same epoch again); epochs
        come in order. The seed is sealed under the signer's key and lives in its ledger.
        """
        wallet, epoch = _wallet_name(params), _epoch_number(params)
        existing = self.state.seeds.get((wallet, epoch))
        if existing is None:
            epochs = self.state.epochs_of(wallet)
            expected = (epochs[-1] + 1) if epochs else 1
            if epoch != expected:
                raise refuse(f"wallet {wallet!r}: the next key epoch is {expected}, not {epoch}")
            if epoch > 1 and (wallet, epoch) not in self.state.rotations_allowed:
                # A new epoch moves the wallet's deposits to keys nobody has reviewed; only a
                # key rotation with its quorum evidence makes one (apply_governed).
                raise refuse(
                    f"wallet {wallet!r}: key epoch {epoch} needs an approved key rotation "
                    "(apply_governed kind 'key_rotation')"
                )
            seed = generate_seed(self._vault, wallet=wallet, epoch=epoch, network=self.network)
            body = {
                "wallet": wallet,
                "epoch": epoch,
                "sealed": seed.encrypted.to_string(),
                "account_xpub": seed.account_xpub,
                "master_fingerprint": seed.master_fingerprint,
            }
            self._record(EPOCH, body)
            existing = self.state.seeds[(wallet, epoch)]
        return {
            "wallet": wallet,
            "epoch": epoch,
            "account_xpub": existing.account_xpub,
            "master_fingerprint": existing.master_fingerprint,
        }

    def import_seed(self, params: dict[str, Any]) -> dict[str, Any]:
        """A key epoch made before the signer held seeds (its seed a KEK ciphertext in the
        service's database, migration 0020): the service unseals it one last time and hands
        over its ``words``. Only while genesis is open, on the service's word like the staff
        import: after it, whoever holds the API host could plant a seed they know. The words
        must derive ``account_xpub``, the key the service watches and pays from. Importing
        the same seed again is a no-op, even after genesis (nothing new is trusted)."""
        wallet, epoch = _wallet_name(params), _epoch_number(params)
        words, account_xpub = params.get("words"), params.get("account_xpub")
        if not isinstance(words, str) or not words.strip():
            raise SignerError(wire.INVALID_REQUEST, "words must be the seed's BIP39 words")
        if not isinstance(account_xpub, str) or not account_xpub:
            raise SignerError(wire.INVALID_REQUEST, "account_xpub must be an xpub")
        existing = self.state.seeds.get((wallet, epoch))
        if not self.state.evidence.genesis_open and (
            existing is None or existing.account_xpub != account_xpub
        ):
            raise SignerError(
                wire.NOT_ALLOWED,
                "a seed can be imported only while genesis is open: on the signer's host, with "
                "the signer stopped, use `walletsvc signer import-seed` (docs/runbook.md)",
            )
        return self._import_seed(
            wallet, epoch, words, expected_xpub=account_xpub, source="legacy-import"
        )

    def sign(self, params: dict[str, Any]) -> dict[str, Any]:
        wallet = _wallet_name(params)
        kind = params.get("kind")
        if kind not in wire.SIGN_KINDS:
            kinds = sorted(wire.SIGN_KINDS)
            raise SignerError(wire.INVALID_REQUEST, f"kind must be one of {kinds}")
        plan, approved, batch = wire.decode_batch(params.get("batch"))
        requested_sweep = frozenset(bytes.fromhex(_hex(s)) for s in _list(params.get("sweep", [])))
        requested_fee_cap = params.get("max_fee_sat")
        if requested_fee_cap is not None and (
            isinstance(requested_fee_cap, bool)
            or not isinstance(requested_fee_cap, int)
            or requested_fee_cap < 0
        ):
            raise SignerError(wire.INVALID_REQUEST, "max_fee_sat must be an integer >= 0")
        if params.get("audit_head") is not None:
            # Before anything else, an exact replay included: no event before this signature
            # can then be cut or edited unseen (walletsvc.signer.anchors). Not in the digest:
            # a retry after a crash carries a later head and is still the same request.
            self._anchor(*anchors.parse_head(params["audit_head"]))
        digest = content_digest(
            {
                "wallet": wallet,
                "kind": kind,
                "batch": hashlib.sha256(batch).hexdigest(),  # canonical bytes: wire.pack_batch
                "sweep": sorted(s.hex() for s in requested_sweep),
                "max_fee_sat": requested_fee_cap,
            }
        )
        earlier = self.state.by_request.get(digest)
        if earlier is not None:
            return dict(earlier.result)  # an exact replay: the same bytes, nothing new signed

        cold_only = not approved and all(
            o.purpose is not OutputPurpose.PAYOUT for o in plan.outputs
        )
        frozen = self.state.frozen_reason(wallet)
        if frozen is not None and not cold_only:
            raise SignerError(wire.FROZEN, f"wallet {wallet!r} is frozen in the signer: {frozen}")
        sweep_scripts = self._check_cold(wallet, plan)
        fresh = self._check_never_twice(wallet, plan, approved, cold_only)
        self._check_policy(wallet, approved, fresh)
        seeds = {
            epoch: EncryptedSeed.from_string(entry.sealed)
            for (name, epoch), entry in self.state.seeds.items()
            if name == wallet
        }
        signed = self._hot.sign(
            wallet=wallet,
            network=self.network,
            seeds=seeds,
            plan=plan,
            approved=approved,
            sweep_scripts=sweep_scripts,
            max_fee_sat=self._fee_cap(wallet, kind, plan, cold_only, requested_fee_cap),
        )
        result = wire.encode_signed(signed)
        body = {
            "wallet": wallet,
            "kind": kind,
            "request_digest": digest,
            "inputs": sorted(f"{c.txid.lower()}:{c.vout}" for c in plan.inputs),
            "payouts": [
                {
                    "withdrawal_id": a.withdrawal_id,
                    "amount_sat": a.amount_sat,
                    "destination": self._destination(a.script_pubkey),
                    "new": a.withdrawal_id in fresh,
                }
                for a in approved
            ],
            "result": result,
        }
        self._record(SIGNED, body)
        log.info("signed %s for wallet %s (%s)", signed.txid, wallet, kind)
        return result

    def freeze(self, params: dict[str, Any]) -> dict[str, Any]:
        """Tightening: applies at once, on the service's word alone."""
        wallet = _optional_wallet(params)
        reason = params.get("reason")
        if not isinstance(reason, str) or not reason:
            raise SignerError(wire.INVALID_REQUEST, "reason must be a non-empty string")
        self._record(FREEZE, {"wallet": wallet, "reason": reason[:500]})
        return {"frozen": dict(self.state.frozen)}

    def unfreeze(self, params: dict[str, Any]) -> dict[str, Any]:
        """Loosening: never on the service's word. The governed unfreeze carries the quorum
        evidence (``apply_governed`` kind ``unfreeze``); the ``UNFREEZE`` record stays for
        ledgers written before."""
        raise refuse(
            "an unfreeze needs quorum evidence: apply_governed kind 'unfreeze' with the "
            "approved content"
        )

    def apply_governed(self, params: dict[str, Any]) -> dict[str, Any]:
        """A governed change with the quorum evidence the signer counts itself
        (:mod:`walletsvc.signer.governed`)."""
        return governed.apply_governed(self, params)

    def anchor_audit(self, params: dict[str, Any]) -> dict[str, Any]:
        """Record the service's audit head; a head that goes backwards or changes is refused."""
        seq, head = anchors.parse_head(params)
        self._anchor(seq, head)
        return {"seq": seq, "hash": head}

    def audit_anchors(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every audit head recorded, a page at a time, for `audit verify`."""
        return anchors.page(self.state, params)

    # -- the rules -------------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return self.config.network

    def now(self) -> datetime:
        return self._clock()

    def record(self, type_: str, body: dict[str, Any]) -> None:
        """Append one record and fold it (walletsvc.signer.governed uses this)."""
        self._record(type_, body)

    def _fee_cap(
        self,
        wallet: str,
        kind: str,
        plan: TransactionPlan,
        cold_only: bool,
        requested: int | None,
    ) -> int:
        """The fee cap of this signature, by the signer's own rules; the service may only
        lower it. A theft-shield answer (cold-only by then: _check_cold) may pay up to the
        shield budget of the signer's policy copy over the coins it spends (what the thief
        tried to take is at most those coins), else the configured cap."""
        cap = self.config.max_fee_sat
        if kind == "shield" and cold_only:
            policy = self.state.policy_for(wallet)
            shield = policy.shield if policy is not None else None
            spent = sum(c.amount_sat for c in plan.inputs)
            cap = max(cap, (shield or ShieldPolicy()).fee_budget(spent))
        return cap if requested is None else min(requested, cap)

    def _check_cold(self, wallet: str, plan: TransactionPlan) -> frozenset[bytes]:
        """The sweep outputs' scripts, each verified against the signer's cold copy."""
        scripts = frozenset(
            bytes(o.script_pubkey) for o in plan.outputs if o.purpose is OutputPurpose.SWEEP
        )
        if not scripts:
            return scripts
        text = self.state.cold.get(wallet)
        if text is None:
            raise refuse(
                f"wallet {wallet!r} has no cold destination in the signer: install it on the "
                "signer host (walletsvc signer set-cold)"
            )
        cold = self._cold.get(text)
        if cold is None or cold.descriptor != text:
            cold = self._cold[text] = _ColdScripts(parse_cold_destination(text, self.network))
        for script in scripts:
            if cold.index_of(script) is None:
                raise refuse(
                    f"sweep output pays {self._destination(script)}, which is not an address of "
                    "the signer's cold destination for this wallet"
                )
        return scripts

    def _check_never_twice(
        self,
        wallet: str,
        plan: TransactionPlan,
        approved: list[ApprovedPayout],
        cold_only: bool,
    ) -> set[str]:
        """Refuse a second payment; return the withdrawal ids paid here for the first time."""
        ids = {a.withdrawal_id for a in approved}
        inputs = {f"{c.txid.lower()}:{c.vout}" for c in plan.inputs}
        earlier = {txid for i in inputs for txid in self.state.spent.get(i, [])}
        earlier |= {txid for w in ids for txid in self.state.paid.get(w, [])}
        if not earlier:
            return ids
        if cold_only:
            return ids  # every non-change output goes to cold storage: nothing to pay twice
        replaced = [self.state.txs[t] for t in sorted(earlier)]
        replaced = [tx for tx in replaced if not self._superseded_by_cold(tx)]
        if not replaced:
            # Every earlier transaction paying these ids had all its coins swept to cold
            # since (a key rotation), so at most one of it and its sweep can confirm. Paying
            # again is then counted against the velocity budget again, as if new.
            return ids
        for tx in replaced:
            txid = tx.txid
            if tx.withdrawal_ids != ids:
                paid_here = sorted(tx.withdrawal_ids & ids)
                what = (
                    f"withdrawal(s) {paid_here} were already signed in {txid}"
                    if paid_here
                    else f"coin(s) {sorted(tx.inputs & inputs)} were already spent by {txid}"
                )
                raise refuse(f"never twice: {what}")
            if not tx.inputs & inputs:
                raise refuse(
                    f"never twice: withdrawal(s) {sorted(ids)} were already signed in {txid}, "
                    "and this transaction does not replace it (no common input)"
                )
        return set()  # a replacement: the original already counted these payouts

    def _superseded_by_cold(self, tx: SignedTx) -> bool:
        """Did a later transaction without payouts (to cold) spend every coin of ``tx``?"""
        if not tx.withdrawal_ids:
            return False
        return all(
            any(
                other != tx.txid and not self.state.txs[other].withdrawal_ids
                for other in self.state.spent.get(outpoint, [])
            )
            for outpoint in tx.inputs
        )

    def _check_policy(self, wallet: str, approved: list[ApprovedPayout], fresh: set[str]) -> None:
        policy = self.state.policy_for(wallet)
        if policy is None:
            raise refuse("the signer holds no policy; install one at signer init")
        if not fresh:
            return
        policy = signers_view(policy)
        now = self._clock()
        since = now - history_horizon(policy)
        # Running totals: each payout sees the history and the batch's payouts before it,
        # without walking all of them again (a round of n payouts would walk n²).
        held = RunningTotals(
            policy, now, (p for p in self.state.history.get(wallet, []) if p.created_at >= since)
        )
        for payout in approved:
            if payout.withdrawal_id not in fresh:
                continue
            destination = self._destination(payout.script_pubkey)
            request = PayoutRequest(wallet, destination, payout.amount_sat)
            snapshot = held.snapshot(destination, self._allowlist_entry(wallet, destination))
            decision = evaluate(request, snapshot, policy, now)
            if decision.outcome == "deny":
                failed = [r for r in decision.rules if r.result in ("fail", "error")]
                reason = "; ".join(f"{r.rule}: {r.detail}" for r in failed) or "denied"
                raise refuse(
                    f"the signer's policy denies withdrawal {payout.withdrawal_id}: {reason}"
                )
            if decision.outcome == "require_approval":
                self._check_approvals(payout, destination, decision.required)
            held.add(HeldPayout(payout.amount_sat, destination, None, now))

    def _allowlist_entry(self, wallet: str, destination: str) -> AllowlistEntry | None:
        """The engine's view of ``destination`` from the signer's own allowlist copy:
        cooling-off and trust ramp run from when the signer learned the quorum."""
        copy = self.state.allowlist.get((wallet, normalize_address(destination)))
        if copy is None:
            return None
        return AllowlistEntry(address=destination, active_since=copy.active_since, status="active")

    def _check_approvals(
        self, payout: ApprovedPayout, destination: str, required: Required | None
    ) -> None:
        """A payout above a tier is signed only on decisions this signer recorded itself
        (each after checking the approver's step-up) on the digest of content that names
        exactly this payout. Content edited after the decisions hashes to another digest,
        on which nobody decided: refused, never re-bound."""
        wid = payout.withdrawal_id
        if required is None:
            raise refuse(f"withdrawal {wid} needs approvals, but the policy names no quorum")
        if payout.approval is None:
            raise refuse(
                f"withdrawal {wid} needs {required.m} approvals of group {required.group!r}, "
                "and the request carries no approval content"
            )
        content = json.loads(payout.approval)
        expected = {
            "kind": WITHDRAWAL_KIND,
            "withdrawal_id": wid,
            "script_pubkey": bytes(payout.script_pubkey).hex(),
            "amount_sat": payout.amount_sat,
        }
        differs = sorted(k for k, v in expected.items() if content.get(k) != v)
        if str(content.get("destination", "")).lower() != destination.lower():
            differs.append("destination")
        if differs:
            raise refuse(
                f"withdrawal {wid}: the approval content does not name this payout ({differs})"
            )
        digest = content_digest(content)
        reached = self.state.evidence.quorum_reached_at(
            kind=WITHDRAWAL_KIND, digest=digest, group=required.group, m=required.m
        )
        if reached is None:
            counted = sum(
                1
                for d in self.state.evidence.decisions.get(digest, [])
                if d.kind == WITHDRAWAL_KIND and d.decision == "approve"
            )
            raise refuse(
                f"withdrawal {wid} needs {required.m} approvals of group {required.group!r} "
                f"recorded in the signer on content {digest}; it holds {counted} approval(s) "
                "(or a rejection)"
            )

    def _destination(self, script: bytes) -> str:
        try:
            return script_to_address(bytes(script), self.network)
        except ValueError:
            return f"script:{bytes(script).hex()}"

    def _anchor(self, seq: int, head: str) -> None:
        if anchors.is_new(self.state, seq, head):
            self._record(AUDIT_ANCHOR, {"seq": seq, "hash": head})

    def _import_seed(
        self, wallet: str, epoch: int, words: str, *, expected_xpub: str | None, source: str
    ) -> dict[str, Any]:
        """Seal ``words`` as ``wallet``'s key epoch ``epoch`` under the signer's key and record
        the EPOCH; a no-op for the seed the ledger holds already, refused for another one."""
        try:
            seed = import_mnemonic(
                self._vault, words, wallet=wallet, epoch=epoch, network=self.network
            )
        except InvalidMnemonic as exc:
            raise SignerError(wire.INVALID_REQUEST, exc.message) from None
        seed.mnemonic.reveal()  # the caller has the words; none linger here
        if expected_xpub is not None and seed.account_xpub != expected_xpub:
            raise refuse(
                f"wallet {wallet!r} key epoch {epoch}: the words derive account xpub "
                f"{seed.account_xpub}, not the {expected_xpub} the service holds"
            )
        existing = self.state.seeds.get((wallet, epoch))
        if existing is None:
            body = {
                "wallet": wallet,
                "epoch": epoch,
                "sealed": seed.encrypted.to_string(),
                "account_xpub": seed.account_xpub,
                "master_fingerprint": seed.master_fingerprint,
                "source": source,
            }
            self._record(EPOCH, body)
        elif existing.account_xpub != seed.account_xpub:
            raise refuse(f"wallet {wallet!r} has another seed for key epoch {epoch} already")
        entry = self.state.seeds[(wallet, epoch)]
        return {
            "wallet": wallet,
            "epoch": epoch,
            "account_xpub": entry.account_xpub,
            "master_fingerprint": entry.master_fingerprint,
        }

    def _record(self, type_: str, body: dict[str, Any]) -> None:
        record = self.ledger.append(type_, body, at=self._clock())
        self.state.apply(record)


class _ColdScripts:
    """The scripts of one cold destination, derived on demand (a few hundred at a time)."""

    def __init__(self, destination: ColdDestination) -> None:
        self.destination = destination
        self.descriptor = destination.descriptor
        self._scripts: dict[bytes, int] = {}
        self._highest_seen = -1

    def index_of(self, script: bytes) -> int | None:
        while (
            script not in self._scripts and len(self._scripts) <= self._highest_seen + COLD_SEARCH
        ):
            start = len(self._scripts)
            for index in range(start, start + COLD_CHUNK):
                self._scripts[self.destination.script_pubkey(index)] = index
        found = self._scripts.get(script)
        if found is not None:
            self._highest_seen = max(self._highest_seen, found)
        return found


def signers_view(policy: PolicyDocument) -> PolicyDocument:
    """The rules of ``policy`` the signer can judge from what it holds.

    * Token windows go: the signer cannot tell API tokens apart (whoever holds the API host
      can use any of them); the wallet and destination windows bound them all.

    The allowlist stays whole ("required", cooling-off, trust ramp, denylist): the signer
    judges it from its own copy (:mod:`walletsvc.signer.governed`).
    """
    velocity = tuple(v for v in policy.velocity if v.scope != "token")
    if len(velocity) == len(policy.velocity):
        return policy
    return policy.model_copy(update={"velocity": velocity})


def _allowlist_view(state: SignerState) -> dict[str, list[dict[str, str]]]:
    view: dict[str, list[dict[str, str]]] = {}
    for (wallet, address), entry in sorted(state.allowlist.items()):
        since = entry.active_since.isoformat()
        view.setdefault(wallet, []).append({"address": address, "active_since": since})
    return view


def _wallet_name(params: dict[str, Any]) -> str:
    wallet = params.get("wallet")
    if not isinstance(wallet, str) or not wallet or len(wallet) > 64:
        raise SignerError(wire.INVALID_REQUEST, "wallet must be a wallet name")
    return wallet


def _epoch_number(params: dict[str, Any]) -> int:
    epoch = params.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise SignerError(wire.INVALID_REQUEST, "epoch must be an integer >= 1")
    return epoch


def _optional_wallet(params: dict[str, Any]) -> str | None:
    return None if params.get("wallet") is None else _wallet_name(params)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise wire.WireError("expected a list")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str):
        raise wire.WireError("expected a hex string")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise wire.WireError("expected a hex string") from None
    return value


_OPS: dict[str, Callable[[SignerCore, dict[str, Any]], dict[str, Any]]] = {
    "status": SignerCore.status,
    "new_epoch": SignerCore.new_epoch,
    "import_seed": SignerCore.import_seed,
    "sign": SignerCore.sign,
    "freeze": SignerCore.freeze,
    "unfreeze": SignerCore.unfreeze,
    "apply_governed": SignerCore.apply_governed,
    "anchor_audit": SignerCore.anchor_audit,
    "enrol_staff": lambda core, params: core.people.enrol_staff(params),
    "reset_totp": lambda core, params: core.people.reset_totp(params),
    "disable_staff": lambda core, params: core.people.disable_staff(params),
    "close_genesis": lambda core, params: core.people.close_genesis(params),
    "check_totp": lambda core, params: core.people.check_totp(params),
    "record_decision": lambda core, params: core.people.record_decision(params),
    "register_passkey": lambda core, params: core.people.register_passkey(params),
    "remove_passkey": lambda core, params: core.people.remove_passkey(params),
    "audit_anchors": SignerCore.audit_anchors,
}
