"""Who may do what: the scopes of API tokens and the roles of staff (names only).

Plain constants, so the CLI can list them in its help without loading the services.
"""

from __future__ import annotations

SCOPES = frozenset(
    {
        "withdrawals:create",
        "withdrawals:read",
        "addresses:write",
        "addresses:read",
        "allowlist:propose",
        "freeze",
        "sweeps:write",
        "webhooks",
        "read",
    }
)
ROLES = ("approver", "operator", "auditor")
