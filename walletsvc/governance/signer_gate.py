"""Governed changes go to the signer first, with the exact content staff approved.

The signer counts the quorum of that content's digest in its own ledger (decisions reach it
from ``approvals.decide``) and refuses a change it cannot verify. A refusal is audited here
(``governed.signer_refused``) and the caller leaves the database as it was: the service never
believes a change its signer does not hold (docs/architecture.md, "The signer"). A signer
that cannot be reached raises (DependencyUnavailable): nothing changes, the caller retries.
"""

from __future__ import annotations

from typing import Any

from walletsvc.db.database import UnitOfWork
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.ports import SignerPort
from walletsvc.keys.integrity import content_digest

SIGNER_REFUSED = "governed.signer_refused"


def send_governed(
    uow: UnitOfWork,
    signer: SignerPort,
    *,
    actor: str,
    kind: str,
    content: dict[str, Any],
    subject: tuple[str, str],
    payload: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The signer's answer, or None (audited) when it refused the change."""
    try:
        return signer.apply_governed(kind, content, payload)
    except SigningRefused as exc:
        subject_type, subject_id = subject
        uow.audit(
            actor,
            SIGNER_REFUSED,
            subject_type,
            subject_id,
            {"kind": kind, "digest": content_digest(content), "reason": exc.message},
        )
        return None
