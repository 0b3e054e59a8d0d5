"""The policy engine: pure domain code deciding whether money may leave a wallet.

* ``document``: the YAML policy format, its validation, canonical form and hash;
* ``engine``: ``evaluate(request, history, policy, now) -> Decision``;
* ``ratchet``: ``compare(old, new) -> ChangeAssessment`` (does a change only tighten?).

No framework, database or network code here (import-linter enforces it).
"""

from .document import (
    GOVERNED_ACTIONS,
    GovernedAction,
    PolicyDocument,
    PolicyError,
    Quorum,
    canonical_json,
    load_policy_yaml,
    parse_policy,
    policy_hash,
    policy_json_schema,
)
from .engine import (
    AllowlistEntry,
    Decision,
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    Required,
    RuleResult,
    approval_deadline,
    evaluate,
    history_horizon,
)
from .ratchet import Change, ChangeAssessment, compare

__all__ = [
    "GOVERNED_ACTIONS",
    "AllowlistEntry",
    "Change",
    "ChangeAssessment",
    "Decision",
    "GovernedAction",
    "HeldPayout",
    "HistorySnapshot",
    "PayoutRequest",
    "PolicyDocument",
    "PolicyError",
    "Quorum",
    "Required",
    "RuleResult",
    "approval_deadline",
    "canonical_json",
    "compare",
    "evaluate",
    "history_horizon",
    "load_policy_yaml",
    "parse_policy",
    "policy_hash",
    "policy_json_schema",
]
