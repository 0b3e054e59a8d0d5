"""Every governed action that goes through the approval mechanism, registered explicitly.

The approval mechanism (walletsvc.governance.approvals) knows kinds only by name; each feature
package defines its handler. The composition root calls :func:`register_approval_kinds` once
before anything opens or decides a request, so no module registers anything on import and the
approval mechanism imports none of the features that use it.
"""

from __future__ import annotations

from walletsvc.domain.ports import SignerPort
from walletsvc.governance.allowlist import AllowlistApprovals
from walletsvc.governance.approvals import ApprovalKind, register_kind
from walletsvc.governance.policy_changes import PolicyChangeApprovals
from walletsvc.governance.staff_changes import StaffChangeApprovals
from walletsvc.governance.totp_resets import TotpResetApprovals
from walletsvc.incident.rotation import KeyRotationApprovals
from walletsvc.incident.unfreeze import UnfreezeApprovals
from walletsvc.payouts.intake import WithdrawalApprovals
from walletsvc.treasury.cold import ColdDestinationApprovals


def approval_kinds(signer: SignerPort) -> tuple[ApprovalKind, ...]:
    """Every kind; ``signer`` takes every governed change first (with the approved content,
    whose quorum it counts itself), makes the new seed when a key rotation reaches its quorum
    (and the new TOTP secret when an approved authenticator reset is applied)."""
    return (
        WithdrawalApprovals(),
        AllowlistApprovals(signer),
        PolicyChangeApprovals(signer),
        UnfreezeApprovals(signer),
        KeyRotationApprovals(signer),
        ColdDestinationApprovals(signer),
        TotpResetApprovals(),
        StaffChangeApprovals(),
    )


def register_approval_kinds(signer: SignerPort) -> None:
    """Idempotent: registering the same kinds again replaces them with equal handlers."""
    for kind in approval_kinds(signer):
        register_kind(kind)
