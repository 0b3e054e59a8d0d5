"""Every governed action that goes through the approval mechanism, registered on import.

To add a kind (unfreeze, key rotation, cold-destination change ...): write a class with
``name``, ``content``, ``on_approved``, ``on_rejected``, ``on_expired`` in its service module,
call ``approvals.register_kind`` there, and import the module here.
"""

from walletsvc.services import (  # noqa: F401
    allowlist,
    policy_changes,
    rotation,
    unfreeze,
    withdrawals,
)
