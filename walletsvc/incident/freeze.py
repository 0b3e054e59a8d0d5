"""Emergency freeze: one call stops all signing and broadcasting (or deposits) at once.

Why a freeze is immediate: it takes the freeze gate exclusively (walletsvc.db.database), and
every transaction that signs or broadcasts checks for a freeze through that gate and holds it
(shared) until it commits. So once `freeze()` has committed, no later claim can miss it, and
no broadcast that started before it can still be running. It waits for nothing else: not for
intake, the scanner or any other writer (on SQLite it goes first in the writers' queue).
Lifting a freeze is governed (an approval quorum); see walletsvc.incident.unfreeze.

The signer hears of a freeze first: ``freeze(..., signer=...)`` tells the signer process
before it writes the row, so the signer stops signing even when the database is down or a
database writer deletes the row afterwards (the signer keeps its own freeze in its ledger).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from walletsvc.db.database import Database, UnitOfWork
from walletsvc.db.models import utcnow
from walletsvc.db.models_incident import Freeze
from walletsvc.db.repositories import ReadUnitOfWork
from walletsvc.domain.errors import DomainError, InvalidInput, NotFound
from walletsvc.domain.ports import SignerPort
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.metrics import FREEZE_STAGE_SECONDS
from walletsvc.wallets.freezes import active_freezes
from walletsvc.wallets.service import get_wallet

log = logging.getLogger(__name__)
FREEZE_SCOPES = ("all", "withdrawals", "deposits")
SIGNER_SCOPES = ("all", "withdrawals")  # the scopes that stop signing
MAX_REASON_LENGTH = 1_000


def freeze(
    db: Database,
    *,
    scope: str,
    wallet: str | None,
    reason: str,
    actor: str,
    source: str = "manual",
    evidence: dict[str, Any] | None = None,
    signer: SignerPort | None = None,
) -> Freeze:
    """Freeze: the signer first (when given), then the database row.

    A signer that cannot be reached does not stop the database freeze (logged); a database
    that cannot be written leaves the signer frozen and raises.
    """
    # Announced: this process's intake starts no batch until the row is committed.
    with db.freeze_announced():
        began = time.perf_counter()
        if signer is not None and scope in SIGNER_SCOPES:
            freeze_signer(signer, wallet, reason)
            FREEZE_STAGE_SECONDS.labels("signer").observe(time.perf_counter() - began)
        asked = time.perf_counter()
        with db.write(freeze=True) as uow:
            granted = time.perf_counter()
            row = apply_freeze(
                uow,
                scope=scope,
                wallet=wallet,
                reason=reason,
                actor=actor,
                source=source,
                evidence=evidence,
            )
    FREEZE_STAGE_SECONDS.labels("gate").observe(granted - asked)
    FREEZE_STAGE_SECONDS.labels("record").observe(time.perf_counter() - granted)
    return row


def freeze_signer(signer: SignerPort, wallet: str | None, reason: str) -> bool:
    """Tell the signer to stop signing for ``wallet`` (None: all); False if it is unreachable."""
    text = (reason or "").strip()[:MAX_REASON_LENGTH] or "frozen"
    try:
        signer.freeze(wallet, text)
    except DomainError as exc:
        log.error("the signer did not take the freeze (%s): %s", exc.code, exc.message)
        return False
    return True


def apply_freeze(
    uow: UnitOfWork,
    *,
    scope: str,
    wallet: str | None,
    reason: str,
    actor: str,
    source: str = "manual",
    evidence: dict[str, Any] | None = None,
) -> Freeze:
    """Record a freeze inside the caller's transaction (risk rules freeze this way)."""
    if scope not in FREEZE_SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(FREEZE_SCOPES)}", field="scope")
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"a reason (1-{MAX_REASON_LENGTH} characters) is required", field="reason"
        )
    wallet_row = get_wallet(uow, wallet) if wallet else None
    uow.hold_freeze_gate(exclusive=True)
    row = Freeze(
        scope=scope,
        wallet_id=wallet_row.id if wallet_row else None,
        reason=reason,
        source=source,
        evidence=evidence or {},
        created_by=actor,
    )
    uow.freezes.add(row, flush=True)
    uow.audit(
        actor,
        "freeze.applied",
        "freeze",
        row.id,
        {
            "scope": scope,
            "wallet": wallet,
            "reason": reason,
            "source": source,
            "evidence": evidence or {},
        },
    )
    return row


def lift(uow: UnitOfWork, freeze_id: str, *, lifted_by: str) -> Freeze:
    row = uow.freezes.get(freeze_id)
    if row is None:
        raise NotFound("no such freeze", field="freeze_id")
    if row.lifted_at is None:
        row.lifted_at = utcnow()
        row.lifted_by = lifted_by
        uow.audit(lifted_by, "freeze.lifted", "freeze", row.id, {"scope": row.scope})
    return row


def freeze_view(uow: ReadUnitOfWork, row: Freeze) -> dict[str, Any]:
    wallet = uow.wallets.get(row.wallet_id) if row.wallet_id else None
    return {
        "id": row.id,
        "scope": row.scope,
        "wallet": wallet.name if wallet else None,
        "reason": row.reason,
        "source": row.source,
        "evidence": row.evidence,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "lifted_at": row.lifted_at.isoformat() if row.lifted_at else None,
    }


def freeze_state(uow: ReadUnitOfWork) -> dict[str, Any]:
    rows = active_freezes(uow)
    return {
        "frozen": bool(rows),
        "freezes": [freeze_view(uow, r) for r in rows],
        "held_payouts": held_payouts(uow, rows),
    }


# Payouts that leave once the freeze lifts: approved (signed at the next pass) and signed
# (stored, broadcast at the next pass). Pending ones still wait for their approvers anyway.
HELD_STATUSES = (WithdrawalStatus.APPROVED.value, WithdrawalStatus.SIGNED.value)


def held_payouts(uow: ReadUnitOfWork, freezes: Sequence[Freeze]) -> list[dict[str, Any]]:
    """What lifting ``freezes`` lets out: the held payouts of the wallets whose withdrawals
    they stop, so operators can cancel any before the service resumes."""
    holding = [f for f in freezes if f.scope in ("all", "withdrawals")]
    if not holding:
        return []
    every_wallet = any(f.wallet_id is None for f in holding)
    wallet_ids = None if every_wallet else sorted({f.wallet_id for f in holding if f.wallet_id})
    rows = uow.withdrawals.with_statuses_of_wallets(HELD_STATUSES, wallet_ids)
    names = {w.id: w.name for w in uow.wallets.all_by_name()}
    return [
        {
            "id": w.id,
            "wallet": names.get(w.wallet_id),
            "status": w.status,
            "destination": w.destination,
            "amount_sat": w.amount_sat,
            "reference": w.reference,
            "created_at": w.created_at.isoformat(),
        }
        for w in rows
    ]


# --- Read use cases --------------------------------------------------------------------------


def show_freeze(db: Database, row: Freeze) -> dict[str, Any]:
    with db.read() as uow:
        return freeze_view(uow, row)


def freeze_overview(db: Database) -> dict[str, Any]:
    """Whether anything is frozen, and the active freezes (``GET /freeze``, readiness)."""
    with db.read() as uow:
        return freeze_state(uow)
