"""Refills from cold storage: a PSBT proposed here, signed offline, broadcast once complete.

When a hot wallet's balance is below its policy floor, an operator asks for a refill. The
service picks confirmed cold coins (watched by the scanner, walletsvc.chainsync.scanner) and
proposes one transaction paying ``target - balance`` to the hot wallet's next receive address,
with change back to the next cold address. It is handed out as a BIP174 PSBT with witness
UTXOs, witness scripts and BIP32 key origins, so hardware wallets (through HWI, Sparrow or
their own PSBT import) can show and sign it. Staff upload what their devices signed, one PSBT
or several; each is checked to be exactly the proposed transaction, each signature is checked
against its input's keys and digest, and once every input has enough signatures the
transaction is finalized, verified input by input by libbitcoinkernel and broadcast.

The proposal's coins and outputs are re-derived from the tagged cold destination and the
wallet's own addresses at every upload, so an edit of the stored proposal cannot make the
service combine signatures for other coins or outputs. The service never holds a cold key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from embit.psbt import PSBT

from walletsvc.config import Settings
from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import Wallet, utcnow
from walletsvc.db.models_treasury import ColdUtxo, Refill
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.tags import refill_message
from walletsvc.domain.coinselect import COINBASE_MATURITY
from walletsvc.domain.errors import (
    ChainRejected,
    Conflict,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    VerificationFailed,
)
from walletsvc.domain.money import DUST_LIMIT_SAT
from walletsvc.domain.ports import ChainBackend, ScriptVerifier, SpentOutput
from walletsvc.domain.sizes import (
    P2WPKH_INPUT_BASE_SIZE,
    SEGWIT_MARKER_FLAG_SIZE,
    WITNESS_SCALE_FACTOR,
    output_size,
    p2wpkh_witness_size,
    varint_size,
    weight_to_vsize,
)
from walletsvc.domain.transaction import RBF_SEQUENCE
from walletsvc.governance.policies import IntegrityFailure, active_policy
from walletsvc.keys.descriptor import ColdDestination, ColdKind
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.psbt import (
    ColdInput,
    ProposedOutput,
    build_psbt,
    check_same_transaction,
    finalize,
    merge_signatures,
    missing_signatures,
    parse_psbt,
    to_base64,
    unsigned_tx,
)
from walletsvc.payouts.signing import fee_rate, tip_height
from walletsvc.treasury.cold import (
    NoColdDestination,
    active_cold_destination,
    reserve_cold_address,
    verified_cold_destination,
)
from walletsvc.treasury.sweeps import hot_position
from walletsvc.wallets.freezes import withdrawals_freeze
from walletsvc.wallets.service import get_wallet, issue_address

log = logging.getLogger(__name__)

AWAITING = "awaiting_signatures"
SIGNED = "signed"  # complete and verified, broadcast pending (or refused by the node)
BROADCAST = "broadcast"
CONFIRMED = "confirmed"
CANCELLED = "cancelled"
# Worst-case DER signature + sighash byte, as the hot side's size estimates use.
_MAX_SIGNATURE = 72


@dataclass(frozen=True)
class RefillPosition:
    """A wallet's hot balance against its thresholds: whether a refill is due, and of what."""

    wallet: str
    balance_sat: int  # confirmed, plus change in flight, minus what payouts already need
    floor_sat: int | None  # None: the policy in force sets no hot thresholds
    target_sat: int | None
    cold_balance_sat: int
    has_cold_destination: bool
    open_refill: str | None  # the refill still waiting for signatures, if any

    @property
    def below_floor(self) -> bool:
        return self.floor_sat is not None and self.balance_sat < self.floor_sat

    @property
    def proposed_sat(self) -> int | None:
        """What a refill proposed now would bring to the hot wallet (up to its target)."""
        if not self.below_floor or self.target_sat is None:
            return None
        return self.target_sat - self.balance_sat


@dataclass(frozen=True)
class _Candidate:
    row: ColdUtxo
    coin: ColdInput


class RefillService:
    """Propose refills, collect their signatures, broadcast them."""

    def __init__(
        self,
        db: Database,
        tags: RowTagger,
        chain: ChainBackend,
        verifier: ScriptVerifier,
        settings: Settings,
    ) -> None:
        self.db = db
        self.tags = tags
        self.chain = chain
        self.verifier = verifier
        self.settings = settings

    # -- propose -------------------------------------------------------------------------

    def propose(self, wallet: str, *, actor: str) -> dict[str, Any]:
        """A PSBT bringing the hot wallet back to its target from cold coins."""
        rate = fee_rate(self.chain, self.settings)
        with self.db.write() as uow:
            row = get_wallet(uow, wallet)
            if withdrawals_freeze(uow, row.id) is not None:
                raise Conflict("the wallet is frozen; no refill until the freeze is lifted")
            hot = active_policy(uow, self.tags, row).document.hot
            if hot is None:
                raise Conflict(
                    "the active policy has no hot thresholds (floor, target) for this wallet",
                    field="wallet",
                )
            if active_cold_destination(uow, self.tags, row) is None:
                raise NoColdDestination(
                    f"wallet {wallet!r} has no cold destination to refill from", field="wallet"
                )
            pending = uow.refills.open_of_wallet(row.id)
            if pending:
                raise Conflict(
                    f"refill {pending[0].id} is still waiting for signatures", field="wallet"
                )
            position = hot_position(uow, row, min_confirmations=self.settings.min_confirmations)
            balance = position.available_sat
            if balance >= hot.floor_sat:
                raise Conflict(
                    f"the hot balance ({balance} sat) is not below its floor "
                    f"({hot.floor_sat} sat); no refill is needed",
                    field="wallet",
                )
            refill, spends = self._propose(uow, row, amount=hot.target_sat - balance, rate=rate)
            refill.requested_by = actor
            uow.refills.add(refill, flush=True)
            refill.mac = self.tags.tag(refill_message(refill))  # its id exists from the flush
            for coin_row in spends:  # reserved, so no other refill offers them again
                coin_row.reserved_by = refill.id
            view = refill_view(uow, refill)
            uow.audit(
                actor,
                "refill.proposed",
                "refill",
                refill.id,
                {
                    **{k: view[k] for k in ("wallet", "txid", "amount_sat", "fee_sat")},
                    "hot_address": refill.hot_address,
                    "balance_sat": balance,
                    "floor_sat": hot.floor_sat,
                    "target_sat": hot.target_sat,
                    "fee_rate_sat_per_vb": rate,
                    "inputs": view["inputs"],
                },
            )
            return view

    def _propose(
        self, uow: UnitOfWork, wallet: Wallet, *, amount: int, rate: int
    ) -> tuple[Refill, list[ColdUtxo]]:
        candidates = self._spendable(uow, wallet)
        found = active_cold_destination(uow, self.tags, wallet)
        assert found is not None  # checked by the caller
        destination_row, destination = found
        hot_script_hex = self._next_hot_script(uow, wallet)
        change_preview = destination.script_pubkey(destination_row.next_index)
        chosen: list[_Candidate] = []
        total = 0
        fee = 0
        # Largest coins first: the fewest inputs, so the fewest signatures to collect offline.
        for candidate in sorted(candidates, key=lambda c: -c.row.amount_sat):
            chosen.append(candidate)
            total += candidate.row.amount_sat
            fee = rate * _vsize(
                [c.coin for c in chosen], [bytes.fromhex(hot_script_hex), change_preview]
            )
            if total >= amount + fee:
                break
        if total < amount + fee:
            cold = sum(c.row.amount_sat for c in candidates)
            raise InsufficientFunds(
                f"cold storage holds {cold} sat in confirmed coins not already in a refill; "
                f"the refill needs {amount} sat plus a fee of {fee} sat",
                field="wallet",
            )
        if fee > self.settings.max_fee_sat:
            raise Conflict(
                f"the refill's fee ({fee} sat) exceeds the configured cap "
                f"({self.settings.max_fee_sat} sat)"
            )
        change = total - amount - fee
        address = issue_address(uow, wallet, label="refill from cold", actor="system:refills")
        assert address.script_pubkey == hot_script_hex
        outputs = [ProposedOutput(bytes.fromhex(address.script_pubkey), amount)]
        change_index: int | None = None
        if change >= DUST_LIMIT_SAT:
            cold_address = reserve_cold_address(uow, self.tags, wallet)
            change_index = cold_address.index
            outputs.append(_cold_output(destination, change_index, change))
        else:
            fee += change  # a change output worth less than dust goes to the miners
            change = 0
        # BIP69 order, as every transaction of the service (deterministic for the same coins).
        coins = sorted(
            (c.coin for c in chosen), key=lambda c: (bytes.fromhex(c.txid)[::-1], c.vout)
        )
        outputs.sort(key=lambda o: (o.amount_sat, o.script_pubkey))
        psbt = build_psbt(coins, outputs, locktime=max(tip_height(uow), 0), sequence=RBF_SEQUENCE)
        unsigned = unsigned_tx(psbt)
        refill = Refill(
            wallet_id=wallet.id,
            cold_destination_id=destination_row.id,
            status=AWAITING,
            amount_sat=amount,
            fee_sat=fee,
            change_sat=change,
            change_index=change_index,
            hot_address=address.address,
            hot_script_pubkey=address.script_pubkey,
            txid=psbt.tx.txid().hex(),
            unsigned_tx=unsigned.hex(),
            psbt=to_base64(psbt),
            requested_by="",
        )
        return refill, [c.row for c in chosen]

    @staticmethod
    def _next_hot_script(uow: ReadUnitOfWork, wallet: Wallet) -> str:
        """The hot receive address the refill will pay (issued once the coins are chosen)."""
        epoch = uow.key_epochs.find(wallet.id, wallet.current_epoch)
        assert epoch is not None
        return uow.addresses.at(wallet.id, epoch.epoch, 0, epoch.next_receive_index).script_pubkey

    def _spendable(self, uow: UnitOfWork, wallet: Wallet) -> list[_Candidate]:
        tip = tip_height(uow)
        destinations = _destinations(uow, self.tags, wallet)
        found = []
        for row in uow.cold_utxos.unspent_of_wallet(wallet.id, for_update=True):
            if row.reserved_by is not None or row.block_height is None:
                continue
            if row.is_coinbase and tip - row.block_height + 1 < COINBASE_MATURITY:
                continue
            found.append(_Candidate(row, _cold_input(row, destinations)))
        return found

    # -- signatures ----------------------------------------------------------------------

    def add_signatures(self, refill_id: str, psbt_text: str, *, actor: str) -> dict[str, Any]:
        """Check and keep the uploaded PSBT's signatures; finalize, verify and broadcast when
        every input has enough. Nothing is kept if anything in the upload is refused."""
        uploaded = parse_psbt(psbt_text)
        with self.db.write() as uow:
            refill = _get(uow, refill_id, for_update=True)
            if refill.status != AWAITING:
                raise Conflict(
                    f"this refill is {refill.status}; it takes no more signatures", field="id"
                )
            check_same_transaction(bytes.fromhex(refill.unsigned_tx), uploaded)
            wallet = uow.wallets.get(refill.wallet_id)
            assert wallet is not None
            inputs = self._check_proposal(uow, refill, wallet)
            combined = PSBT.from_string(refill.psbt)
            check_same_transaction(bytes.fromhex(refill.unsigned_tx), combined)
            added = merge_signatures(combined, uploaded, inputs)
            refill.psbt = to_base64(combined)
            missing = missing_signatures(combined, inputs)
            complete = not any(missing)
            if complete:
                raw = finalize(combined)
                spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in inputs]
                try:
                    self.verifier.verify_transaction(raw, spent)
                except VerificationFailed as exc:
                    raise InvalidInput(
                        f"the signed transaction does not verify: {exc.message}", field="psbt"
                    ) from exc
                refill.raw_tx = raw.hex()
                refill.status = SIGNED
                refill.completed_at = utcnow()
            uow.audit(
                actor,
                "refill.signed" if complete else "refill.signatures_added",
                "refill",
                refill.id,
                {"txid": refill.txid, "new_signatures": added, "missing": missing},
            )
            raw_tx = refill.raw_tx
        if complete and raw_tx is not None:
            self.broadcast(refill_id, actor=actor)
        return self.show(refill_id)

    def _check_proposal(self, uow: UnitOfWork, refill: Refill, wallet: Wallet) -> list[ColdInput]:
        """The proposal's inputs, re-derived from the tagged cold destinations, and its outputs
        checked to be the wallet's own hot address and cold change."""
        if not self.tags.verify(refill_message(refill), refill.mac):
            raise IntegrityFailure(f"refill {refill.id} fails its integrity tag")
        tx = parse_psbt(refill.psbt, field="id").tx
        reserved = {(r.txid, r.vout): r for r in uow.cold_utxos.reserved_by_refill(refill.id)}
        destinations = _destinations(uow, self.tags, wallet)
        inputs = []
        for vin in tx.vin:
            row = reserved.get((vin.txid.hex(), vin.vout))
            if row is None:
                raise IntegrityFailure(f"refill {refill.id} spends a coin it did not reserve")
            inputs.append(_cold_input(row, destinations))
        hot = uow.addresses.of_wallet_by_script(wallet.id, refill.hot_script_pubkey)
        for n, out in enumerate(tx.vout):
            script = out.script_pubkey.data
            if hot is not None and script.hex() == hot.script_pubkey:
                continue
            if refill.change_index is not None:
                destination = destinations.get(refill.cold_destination_id)
                if destination is not None and script == destination.script_pubkey(
                    refill.change_index
                ):
                    continue
            raise IntegrityFailure(
                f"refill {refill.id}: output {n} pays neither the hot wallet nor cold storage"
            )
        return inputs

    def broadcast(self, refill_id: str, *, actor: str) -> None:
        """Send a complete refill; a refusal by the node leaves it ``signed`` and audited."""
        with self.db.read() as uow:
            refill = _get(uow, refill_id)
            raw = refill.raw_tx
        if raw is None:
            return
        try:
            self.chain.broadcast(bytes.fromhex(raw))
        except ChainRejected as exc:
            with self.db.write() as uow:
                uow.audit(
                    actor, "refill.broadcast_failed", "refill", refill_id, {"error": exc.message}
                )
            log.error("refill %s: the node refused the transaction: %s", refill_id, exc.message)
            return
        with self.db.write() as uow:
            refill = _get(uow, refill_id, for_update=True)
            if refill.status == SIGNED:
                refill.status = BROADCAST
                uow.audit(actor, "refill.broadcast", "refill", refill.id, {"txid": refill.txid})

    def cancel(self, refill_id: str, *, actor: str) -> dict[str, Any]:
        """Give up a refill still waiting for signatures: its cold coins are free again.

        Signatures already handed out for it stay valid for that exact transaction; spending
        any of its coins in another transaction is what makes them useless.
        """
        with self.db.write() as uow:
            refill = _get(uow, refill_id, for_update=True)
            if refill.status != AWAITING:
                raise Conflict(
                    f"this refill is {refill.status}; it cannot be cancelled", field="id"
                )
            for coin in uow.cold_utxos.reserved_by_refill(refill.id):
                coin.reserved_by = None
            refill.status = CANCELLED
            refill.completed_at = utcnow()
            uow.audit(actor, "refill.cancelled", "refill", refill.id, {"txid": refill.txid})
            return refill_view(uow, refill)

    # -- read ----------------------------------------------------------------------------

    def show(self, refill_id: str) -> dict[str, Any]:
        with self.db.read() as uow:
            return refill_view(uow, _get(uow, refill_id))

    def signatures_needed(self, refill_id: str) -> int:
        """How many signatures each input of the refill needs (1, or the multisig's M)."""
        with self.db.read() as uow:
            refill = _get(uow, refill_id)
            wallet = uow.wallets.get(refill.wallet_id)
            assert wallet is not None
            destination = _destinations(uow, self.tags, wallet).get(refill.cold_destination_id)
            if destination is None:
                raise IntegrityFailure(f"refill {refill.id} has no cold destination")
            return destination.threshold

    def positions(self) -> list[RefillPosition]:
        """Every wallet's hot balance against its floor and target, as a refill sees it."""
        with self.db.read() as uow:
            return [self._position(uow, wallet) for wallet in uow.wallets.all_by_name()]

    def _position(self, uow: ReadUnitOfWork, wallet: Wallet) -> RefillPosition:
        try:
            hot = active_policy(uow, self.tags, wallet).document.hot
        except IntegrityFailure:
            hot = None  # the policy pages report it; no refill is offered meanwhile
        position = hot_position(uow, wallet, min_confirmations=self.settings.min_confirmations)
        balance = position.available_sat
        pending = uow.refills.open_of_wallet(wallet.id)
        return RefillPosition(
            wallet=wallet.name,
            balance_sat=balance,
            floor_sat=hot.floor_sat if hot is not None else None,
            target_sat=hot.target_sat if hot is not None else None,
            cold_balance_sat=uow.cold_utxos.balance_of_wallet(wallet.id),
            has_cold_destination=active_cold_destination(uow, self.tags, wallet) is not None,
            open_refill=pending[0].id if pending else None,
        )

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self.db.read() as uow:
            return [refill_view(uow, row) for row in uow.refills.recent(limit)]


def _get(uow: ReadUnitOfWork, refill_id: str, *, for_update: bool = False) -> Refill:
    refill = uow.refills.get(refill_id, for_update=for_update)
    if refill is None:
        raise NotFound("no such refill", field="id")
    return refill


def _destinations(
    uow: ReadUnitOfWork, tags: RowTagger, wallet: Wallet
) -> dict[str, ColdDestination]:
    return {
        row.id: verified_cold_destination(uow, tags, row, wallet)
        for row in uow.cold_destinations.of_wallet(wallet.id)
    }


def _cold_input(row: ColdUtxo, destinations: dict[str, ColdDestination]) -> ColdInput:
    destination = destinations.get(row.cold_destination_id)
    if destination is None or destination.script_pubkey(row.cold_index).hex() != row.script_pubkey:
        raise IntegrityFailure(
            f"cold coin {row.txid}:{row.vout} is not at the cold address it claims"
        )
    multisig = destination.kind is ColdKind.MULTISIG
    return ColdInput(
        txid=row.txid,
        vout=row.vout,
        amount_sat=row.amount_sat,
        script_pubkey=bytes.fromhex(row.script_pubkey),
        origins=destination.key_origins(row.cold_index),
        witness_script=destination.witness_script(row.cold_index) if multisig else None,
        threshold=destination.threshold,
    )


def _cold_output(destination: ColdDestination, index: int, amount: int) -> ProposedOutput:
    multisig = destination.kind is ColdKind.MULTISIG
    return ProposedOutput(
        destination.script_pubkey(index),
        amount,
        origins=destination.key_origins(index),
        witness_script=destination.witness_script(index) if multisig else None,
    )


def _witness_size(coin: ColdInput) -> int:
    if coin.witness_script is None:
        return p2wpkh_witness_size(_MAX_SIGNATURE)
    script = len(coin.witness_script)
    # Stack: the empty item CHECKMULTISIG pops as a dummy, M signatures, the witness script;
    # each item is prefixed with its length.
    return (
        varint_size(coin.threshold + 2)
        + 1
        + coin.threshold * (1 + _MAX_SIGNATURE)
        + varint_size(script)
        + script
    )


def _vsize(coins: list[ColdInput], output_scripts: list[bytes]) -> int:
    """An upper bound on the signed transaction's vsize (worst-case signatures)."""
    base = (
        8  # version + locktime
        + varint_size(len(coins))
        + len(coins) * P2WPKH_INPUT_BASE_SIZE  # outpoint, empty scriptSig, sequence
        + varint_size(len(output_scripts))
        + sum(output_size(s) for s in output_scripts)
    )
    witness = SEGWIT_MARKER_FLAG_SIZE + sum(_witness_size(c) for c in coins)
    return weight_to_vsize(WITNESS_SCALE_FACTOR * base + witness)


def refill_view(uow: ReadUnitOfWork, refill: Refill) -> dict[str, Any]:
    wallet = uow.wallets.get(refill.wallet_id)
    tx = parse_psbt(refill.psbt, field="id")
    destination = uow.cold_destinations.get(refill.cold_destination_id)
    return {
        "id": refill.id,
        "wallet": wallet.name if wallet is not None else refill.wallet_id,
        "status": refill.status,
        "complete": refill.status in (SIGNED, BROADCAST, CONFIRMED),
        # Signatures collected so far, per input (a P2WPKH input needs one, a multisig M).
        "signatures": [len(scope.partial_sigs) for scope in tx.inputs],
        "cold_kind": destination.kind if destination is not None else None,
        "txid": refill.txid,
        "amount_sat": refill.amount_sat,
        "fee_sat": refill.fee_sat,
        "change_sat": refill.change_sat,
        "hot_address": refill.hot_address,
        "inputs": [f"{vin.txid.hex()}:{vin.vout}" for vin in tx.tx.vin],
        "cold_balance_sat": uow.cold_utxos.balance_of_wallet(refill.wallet_id),
        "psbt": refill.psbt,
        "requested_by": refill.requested_by,
        "created_at": refill.created_at.isoformat() if refill.created_at else None,
        "completed_at": refill.completed_at.isoformat() if refill.completed_at else None,
    }
