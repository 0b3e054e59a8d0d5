"""Payout rounds: many payouts under one idempotency key, decided by the policy as a whole.

A round is judged atomically, in one locked transaction: every payout goes through the same
policy engine as a single withdrawal, with the velocity windows counting the round's own
earlier payouts (running totals over one set of aggregate queries, not one query per
payout). The rule (docs/api.md, "Payout rounds"):

* if the policy denies any payout, the whole round is refused (422 ``policy_denied`` with the
  rules each denied payout broke) and nothing but the denial's audit event is written;
* otherwise every payout becomes an ordinary withdrawal linked to the round: ``approved``
  where the policy allows it, ``pending_approval`` (with its own approval request, as for a
  single withdrawal) where it asks for approvals. The worker then batches the approved ones.

Each payout is judged as if the round's earlier payouts (those not denied) were already
accepted, in the order of the request; so a round whose total breaks a velocity limit is
refused, with the first payout that crosses it and every later one named.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import PayoutRound, Wallet, new_id
from walletsvc.db.outbox import ROUND_STATUS_CHANGED
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.db.repositories.withdrawals import HeldWindow
from walletsvc.domain.address import Destination, decode_address
from walletsvc.domain.errors import InvalidInput, NotFound, RoundDenied
from walletsvc.domain.money import require_payable
from walletsvc.domain.network import Network
from walletsvc.domain.withdrawal import HOLDING_STATUSES, WithdrawalStatus
from walletsvc.governance import approvals
from walletsvc.governance.allowlist import entries_for_destinations
from walletsvc.governance.policies import ActivePolicy, active_policy
from walletsvc.keys.integrity import RowTagger, content_digest
from walletsvc.metrics import PAYOUT_ROUNDS
from walletsvc.payouts.intake import (
    KIND,
    decode_cursor,
    deny_field,
    encode_cursor,
    failed_rules,
    idempotency_lock,
    new_withdrawal_values,
    require_idempotency_key,
    require_reference,
    require_same_body,
)
from walletsvc.policy.document import Scope
from walletsvc.policy.engine import (
    Decision,
    HeldPayout,
    HeldTotal,
    HistorySnapshot,
    PayoutRequest,
    approval_deadline,
    evaluate,
    trust_ramp_period,
    velocity_windows,
)
from walletsvc.wallets.freezes import require_withdrawals_open
from walletsvc.wallets.service import get_wallet

# The most payouts one round may carry (answered 422 on `payouts` above it). A round is
# decided in one locked transaction; 5,000 keeps that well under a second and the request
# body near 1 MB. A pool paying more miners splits its round in two.
MAX_ROUND_PAYOUTS = 5_000
# Denied payouts named in the refusal's message (all of them are in its `payouts` list).
MESSAGE_DENIALS = 3


@dataclass(frozen=True)
class RoundPayoutInput:
    destination: str
    amount_sat: int
    reference: str | None


@dataclass(frozen=True)
class RoundInput:
    wallet: str
    reference: str | None
    payouts: tuple[RoundPayoutInput, ...]


@dataclass(frozen=True)
class RoundResult:
    round_id: str
    created: bool  # False: an idempotent replay of an earlier request


def request_hash(body: RoundInput) -> str:
    return content_digest(
        {
            "wallet": body.wallet,
            "reference": body.reference,
            "payouts": [
                {"destination": p.destination, "amount_sat": p.amount_sat, "reference": p.reference}
                for p in body.payouts
            ],
        }
    )


def request_round(
    db: Database,
    tags: RowTagger,
    *,
    body: RoundInput,
    idempotency_key: str,
    token_id: str,
    actor: str,
    now: datetime | None = None,
) -> RoundResult:
    """Validate, decode and hash outside the write lock; decide and record inside it."""
    amounts = _validated(body, idempotency_key)
    digest = request_hash(body)
    outcome: RoundResult | RoundDenied | None = None
    while outcome is None:
        with db.read() as uow:
            # A replay answers before any address work; the locked transaction checks again.
            replay = _replay(uow, token_id, idempotency_key, digest)
            if replay is not None:
                return replay
            wallet = get_wallet(uow, body.wallet)
            wallet_id, network = wallet.id, Network(wallet.network)
        destinations = [
            decode_address(p.destination, network, field=f"payouts[{i}].destination")
            for i, p in enumerate(body.payouts)
        ]
        # As intake: the wallet's lock (its limits are the wallet's alone), the idempotency
        # key's, and the freeze gate shared (walletsvc.db.database).
        with db.write(
            wallet_id=wallet_id,
            also_lock=[idempotency_lock(token_id, idempotency_key)],
            honour_freeze=True,
        ) as uow:
            outcome = _decide_and_record(
                uow,
                tags,
                body=body,
                amounts=amounts,
                destinations=destinations,
                wallet_id=wallet_id,
                digest=digest,
                idempotency_key=idempotency_key,
                token_id=token_id,
                actor=actor,
                moment=now or datetime.now(UTC),
            )
        # None: the name named another wallet by the time the lock was held (deleted and
        # created again); resolve it afresh.
    # A refusal is raised only after the transaction holding its audit event has committed.
    if isinstance(outcome, RoundDenied):
        raise outcome
    return outcome


def _validated(body: RoundInput, idempotency_key: str) -> list[int]:
    require_idempotency_key(idempotency_key)
    require_reference(body.reference, field="reference")
    if not body.payouts:
        raise InvalidInput("a payout round needs at least one payout", field="payouts")
    if len(body.payouts) > MAX_ROUND_PAYOUTS:
        raise InvalidInput(
            f"a payout round carries at most {MAX_ROUND_PAYOUTS} payouts", field="payouts"
        )
    amounts = []
    for i, payout in enumerate(body.payouts):
        amounts.append(require_payable(payout.amount_sat, field=f"payouts[{i}].amount_sat"))
        require_reference(payout.reference, field=f"payouts[{i}].reference")
    return amounts


def _replay(uow: ReadUnitOfWork, token_id: str, key: str, digest: str) -> RoundResult | None:
    existing = uow.payout_rounds.by_token_and_key(token_id, key)
    if existing is None:
        return None
    require_same_body(existing.request_hash, digest)
    return RoundResult(existing.id, created=False)


def _decide_and_record(
    uow: UnitOfWork,
    tags: RowTagger,
    *,
    body: RoundInput,
    amounts: list[int],
    destinations: list[Destination],
    wallet_id: str,
    digest: str,
    idempotency_key: str,
    token_id: str,
    actor: str,
    moment: datetime,
) -> RoundResult | RoundDenied | None:
    """The round decided and recorded under the wallet's lock; None if ``body.wallet`` no
    longer names the locked wallet ``wallet_id``."""
    replay = _replay(uow, token_id, idempotency_key, digest)
    if replay is not None:
        return replay
    wallet = get_wallet(uow, body.wallet)
    if wallet.id != wallet_id:
        return None
    # Frozen: 423 and nothing written; the engine retries with the same key once lifted.
    require_withdrawals_open(uow, wallet)
    policy = active_policy(uow, tags, wallet)
    addresses = [d.address for d in destinations]
    decisions = _decide_all(uow, tags, wallet, policy, addresses, amounts, token_id, moment)
    denied = [(i, d) for i, d in enumerate(decisions) if d.outcome == "deny"]
    if denied:
        return _refuse(uow, wallet, actor, denied, addresses, amounts)
    round_row = PayoutRound(
        id=new_id(),
        wallet_id=wallet.id,
        token_id=token_id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        reference=body.reference,
        payout_count=len(amounts),
        total_sat=sum(amounts),
        policy_hash=policy.sha256,
        created_at=moment,
    )
    uow.payout_rounds.add(round_row, flush=True)
    rows = [
        _withdrawal(tags, round_row, i, destination, amount, payout.reference, decision)
        for i, (destination, amount, payout, decision) in enumerate(
            zip(destinations, amounts, body.payouts, decisions, strict=True)
        )
    ]
    uow.withdrawals.add_many(rows)
    _audit_accepted(uow, actor, wallet, round_row, rows, policy)
    for row in rows:
        required = row["decision"]["required"]
        if row["status"] == WithdrawalStatus.PENDING_APPROVAL.value and required is not None:
            # Same transaction: a payout never waits without its approval request.
            approvals.open_request(
                uow,
                tags,
                kind=KIND,
                subject_id=row["id"],
                group=required["group"],
                m=required["m"],
                expires_at=approval_deadline(policy.document, moment),
                requester=actor,
                requester_staff_id=None,
                now=moment,
            )
    return RoundResult(round_row.id, created=True)


def _withdrawal(
    tags: RowTagger,
    round_row: PayoutRound,
    index: int,
    destination: Destination,
    amount: int,
    reference: str | None,
    decision: Decision,
) -> dict[str, Any]:
    """One payout's ``withdrawals`` row, as values for the round's one multi-row INSERT (an
    ORM object per payout would cost more than the rest of the round's intake)."""
    return new_withdrawal_values(
        tags,
        wallet_id=round_row.wallet_id,
        token_id=round_row.token_id,
        destination=destination,
        amount=amount,
        reference=reference,
        decision=decision.to_dict(),
        policy_hash=round_row.policy_hash,
        at=round_row.created_at,
        round_id=round_row.id,
        round_index=index,
    )


def _audit_accepted(
    uow: UnitOfWork,
    actor: str,
    wallet: Wallet,
    round_row: PayoutRound,
    rows: list[dict[str, Any]],
    policy: ActivePolicy,
) -> None:
    # One event per payout, as for a single withdrawal (the risk monitor's request rules read
    # them), and one for the round. A payout's event carries its outcome and quorum; its full
    # rule trace is on the withdrawal (GET /v1/withdrawals/{id}), and the round's event names
    # the policy that produced it.
    uow.audit_many(
        actor,
        "withdrawal.requested",
        "withdrawal",
        [
            (
                row["id"],
                {
                    "wallet": wallet.name,
                    "destination": row["destination"],
                    "amount_sat": row["amount_sat"],
                    "reference": row["reference"],
                    "status": row["status"],
                    "decision": {
                        "outcome": row["decision"]["outcome"],
                        "required": row["decision"]["required"],
                    },
                    "policy_sha256": policy.sha256,
                    "round_id": round_row.id,
                },
            )
            for row in rows
        ],
    )
    uow.audit(
        actor,
        "payout_round.requested",
        "payout_round",
        round_row.id,
        {
            "wallet": wallet.name,
            "reference": round_row.reference,
            "payout_count": round_row.payout_count,
            "total_sat": round_row.total_sat,
            "pending_approval": sum(r["status"] == "pending_approval" for r in rows),
            "policy_sha256": policy.sha256,
        },
    )
    # The payout engine hears of the round and of each payout's first status here: a round's
    # withdrawals are inserted in bulk, so the per-payout status events start with the next
    # move (approved -> signed, ...), which carries the same withdrawal ids.
    uow.emit(
        ROUND_STATUS_CHANGED,
        {
            "round_id": round_row.id,
            "wallet": wallet.name,
            "reference": round_row.reference,
            "status": "accepted",
            "payout_count": round_row.payout_count,
            "total_sat": round_row.total_sat,
            "payouts": [
                {"withdrawal_id": r["id"], "reference": r["reference"], "status": r["status"]}
                for r in rows
            ],
        },
    )
    PAYOUT_ROUNDS.labels("accepted").inc()


def _refuse(
    uow: UnitOfWork,
    wallet: Wallet,
    actor: str,
    denied: list[tuple[int, Decision]],
    addresses: list[str],
    amounts: list[int],
) -> RoundDenied:
    payouts: list[dict[str, Any]] = [
        {
            "index": i,
            "destination": addresses[i],
            "amount_sat": amounts[i],
            "rules": [r.to_dict() for r in failed_rules(decision)],
        }
        for i, decision in denied
    ]
    PAYOUT_ROUNDS.labels("refused").inc()
    uow.audit(
        actor,
        "payout_round.denied",
        "wallet",
        wallet.id,
        {
            "payout_count": len(amounts),
            "total_sat": sum(amounts),
            "denied": [{"index": p["index"], "rules": p["rules"]} for p in payouts],
        },
    )
    first, first_decision = denied[0]
    named = "; ".join(
        f"payouts[{p['index']}] " + ", ".join(f"{r['rule']}: {r['detail']}" for r in p["rules"])
        for p in payouts[:MESSAGE_DENIALS]
    )
    more = f" (and {len(payouts) - MESSAGE_DENIALS} more)" if len(payouts) > MESSAGE_DENIALS else ""
    return RoundDenied(
        f"the policy denies {len(payouts)} of the round's {len(amounts)} payouts, so it refuses "
        f"the round: {named}{more}",
        field=f"payouts[{first}].{deny_field(first_decision) or 'amount_sat'}",
        payouts=payouts,
    )


# --- One policy pass with running totals ---------------------------------------------------


@dataclass
class _Held:
    amount_sat: int = 0
    count: int = 0

    def add(self, amount: int) -> None:
        self.amount_sat += amount
        self.count += 1


class _RoundHistory:
    """The wallet's held payouts (queried once, by aggregate) plus the round's own payouts
    judged so far: what each payout's ``HistorySnapshot`` would be had the earlier ones of
    the round already been accepted."""

    def __init__(
        self,
        uow: ReadUnitOfWork,
        tags: RowTagger,
        wallet: Wallet,
        policy: ActivePolicy,
        addresses: list[str],
        token_id: str,
        moment: datetime,
    ) -> None:
        statuses = [s.value for s in HOLDING_STATUSES]
        self.token_id = token_id
        self.windows = velocity_windows(policy.document)
        # (scope, window) -> held before the round; per destination for that scope.
        self.base: dict[tuple[Scope, int], _Held] = {}
        self.base_by_destination: dict[int, dict[str, tuple[int, int]]] = {}
        for scope, window in self.windows:
            since = moment - timedelta(seconds=window)
            if scope == "destination":
                self.base_by_destination[window] = uow.payout_rounds.held_totals_by_destination(
                    wallet.id, addresses, since, statuses
                )
                continue
            # From the velocity counters, as intake: flat in the payouts of the window.
            ((amount, count),) = uow.withdrawals.counted_totals_since(
                wallet.id, [HeldWindow(since, token_id=token_id, by_token=scope == "token")]
            )
            self.base[(scope, window)] = _Held(amount, count)
        self.ramp: dict[str, list[HeldPayout]] = defaultdict(list)
        ramp_period = trust_ramp_period(policy.document)
        if ramp_period is not None:
            for a, d, t, c in uow.payout_rounds.held_to_destinations_since(
                wallet.id, addresses, moment - ramp_period, statuses
            ):
                self.ramp[d].append(
                    HeldPayout(amount_sat=a, destination=d, token_id=t, created_at=c)
                )
        self.entries = entries_for_destinations(uow, tags, wallet.id, addresses)
        self.moment = moment
        # The round's own payouts judged so far (all made now, so inside every window).
        self.round_total = _Held()
        self.round_by_destination: dict[str, _Held] = defaultdict(_Held)

    def snapshot(self, destination: str) -> HistorySnapshot:
        totals = []
        for scope, window in self.windows:
            if scope == "destination":
                amount, count = self.base_by_destination[window].get(destination, (0, 0))
                own = self.round_by_destination[destination]
            else:
                held = self.base[(scope, window)]
                amount, count = held.amount_sat, held.count
                own = self.round_total  # one wallet, one token: every earlier payout counts
            totals.append(HeldTotal(scope, window, amount + own.amount_sat, count + own.count))
        return HistorySnapshot(
            payouts=tuple(self.ramp.get(destination, ())),
            allowlist_entry=self.entries.get(destination),
            velocity_totals=tuple(totals),
        )

    def accept(self, destination: str, amount: int) -> None:
        self.round_total.add(amount)
        self.round_by_destination[destination].add(amount)
        self.ramp[destination].append(
            HeldPayout(
                amount_sat=amount,
                destination=destination,
                token_id=self.token_id,
                created_at=self.moment,
            )
        )


def _decide_all(
    uow: ReadUnitOfWork,
    tags: RowTagger,
    wallet: Wallet,
    policy: ActivePolicy,
    addresses: list[str],
    amounts: list[int],
    token_id: str,
    moment: datetime,
) -> list[Decision]:
    """The engine's decision on each payout, in request order, with running totals."""
    history = _RoundHistory(uow, tags, wallet, policy, addresses, token_id, moment)
    decisions = []
    for address, amount in zip(addresses, amounts, strict=True):
        decision = evaluate(
            PayoutRequest(
                wallet=wallet.name, destination=address, amount_sat=amount, token_id=token_id
            ),
            history.snapshot(address),
            policy.document,
            moment,
            revision=policy.sha256,
        )
        if decision.outcome != "deny":
            history.accept(address, amount)
        decisions.append(decision)
    return decisions


# --- Read use cases --------------------------------------------------------------------------


def _round_view(
    uow: ReadUnitOfWork, row: PayoutRound, counts: dict[str, int], *, with_payouts: bool
) -> dict[str, Any]:
    wallet = uow.wallets.get(row.wallet_id)
    view: dict[str, Any] = {
        "id": row.id,
        "wallet": wallet.name if wallet else None,
        "reference": row.reference,
        "payout_count": row.payout_count,
        "total_sat": row.total_sat,
        "counts": counts,
        "created_at": row.created_at.isoformat(),
    }
    if with_payouts:
        view["payouts"] = [
            {
                "id": p.id,
                "index": p.index,
                "destination": p.destination,
                "amount_sat": p.amount_sat,
                "reference": p.reference,
                "status": p.status,
                "txid": p.txid,
            }
            for p in uow.payout_rounds.payouts(row.id)
        ]
    return view


def show_round(db: Database, round_id: str) -> dict[str, Any]:
    """The round, its payouts' counts by status and each payout's id, status and txid."""
    with db.read() as uow:
        row = uow.payout_rounds.get(round_id)
        if row is None:
            raise NotFound("no such payout round", field="id")
        counts = uow.payout_rounds.status_counts([row.id])[row.id]
        return _round_view(uow, row, counts, with_payouts=True)


def rounds_index(
    db: Database, *, wallet: str | None, cursor: str | None, limit: int
) -> dict[str, Any]:
    """A page of rounds (without their payouts), newest first, and the next page's cursor."""
    with db.read() as uow:
        wallet_id = get_wallet(uow, wallet).id if wallet is not None else None
        before = decode_cursor(cursor) if cursor else None
        rows = uow.payout_rounds.page(wallet_id=wallet_id, before=before, limit=limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
        counts = uow.payout_rounds.status_counts([r.id for r in rows])
        return {
            "payout_rounds": [_round_view(uow, r, counts[r.id], with_payouts=False) for r in rows],
            "next_cursor": next_cursor,
        }
