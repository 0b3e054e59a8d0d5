"""The event outbox: what webhooks receive, written in the transaction that made the change.

Three ways an event is written, all inside ``Database.write()``:

* ``UnitOfWork.emit(event_type, payload)``: any service, for an event of its own;
* an audited action named in ``PUBLISHED_AUDIT_ACTIONS``: ``UnitOfWork.audit`` emits it too,
  with the audit event's subject and data (audit data holds no secrets by rule, and the
  ``read`` scope can already see it through ``GET /v1/audit``);
* a payout's status change (``withdrawal.status_changed``), caught here for every path that
  moves a payout (ORM attribute changes at flush, and the repository's bulk updates), so a
  new path cannot forget to tell the payout engine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from walletsvc.db.models import Withdrawal, new_id
from walletsvc.db.models_webhooks import OutboxEvent

WITHDRAWAL_STATUS_CHANGED = "withdrawal.status_changed"

# Audited actions that are also webhook events, under the same name.
PUBLISHED_AUDIT_ACTIONS: frozenset[str] = frozenset(
    {
        "freeze.applied",
        "freeze.lifted",
        "unfreeze.applied",
        "sweep.signed",
        "key_rotation.applied",
        "hot.refill_alert",
        "hot.refill_cleared",
        "risk.alert",
        # The theft shield (walletsvc.incident.shield): a theft seen in the mempool, each
        # round of its answer, and the outcome once a block decides it.
        "shield.theft_detected",
        "shield.answered",
        "shield.cap_reached",
        "shield.failed",
        "shield.saved",
        "shield.lost",
        "shield.reopened",
    }
)

# Event types other features emit themselves with ``uow.emit`` (payout rounds, issue 13).
ROUND_STATUS_CHANGED = "round.status_changed"
EMITTED_BY_SERVICES: frozenset[str] = frozenset({ROUND_STATUS_CHANGED})

EVENT_TYPES: frozenset[str] = frozenset(
    {WITHDRAWAL_STATUS_CHANGED, *PUBLISHED_AUDIT_ACTIONS, *EMITTED_BY_SERVICES}
)


def outbox_event(event_type: str, payload: dict[str, Any]) -> OutboxEvent:
    return OutboxEvent(event_type=event_type, payload=payload, fanned_out=False)


def withdrawal_status_payload(
    withdrawal_id: str,
    *,
    reference: str | None,
    amount_sat: int,
    status: str,
    previous_status: str | None,
) -> dict[str, Any]:
    return {
        "withdrawal_id": withdrawal_id,
        "reference": reference,
        "amount_sat": amount_sat,
        "status": status,
        "previous_status": previous_status,
    }


def capture_withdrawal_status_changes(session: Session) -> None:
    """Emit ``withdrawal.status_changed`` for each payout whose status a flush writes."""

    @event.listens_for(session, "before_flush")
    def _before_flush(flushing: Session, _context: Any, _instances: Any) -> None:
        for row in [*flushing.new, *flushing.dirty]:
            if not isinstance(row, Withdrawal):
                continue
            history = inspect(row).attrs.status.history
            if not history.added:
                continue
            previous = history.deleted[0] if history.deleted else None
            if previous == row.status:
                continue
            if row.id is None:  # a new row: its id default would only be applied at INSERT
                row.id = new_id()
            flushing.add(
                outbox_event(
                    WITHDRAWAL_STATUS_CHANGED,
                    withdrawal_status_payload(
                        row.id,
                        reference=row.reference,
                        amount_sat=row.amount_sat,
                        status=row.status,
                        previous_status=previous,
                    ),
                )
            )
