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
    HeldTotal,
    HistorySnapshot,
    PayoutRequest,
    Required,
    RuleResult,
    approval_deadline,
    evaluate,
    held_totals,
    history_horizon,
    trust_ramp_period,
    velocity_windows,
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
    "HeldTotal",
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
    "held_totals",
    "history_horizon",
    "load_policy_yaml",
    "parse_policy",
    "policy_hash",
    "policy_json_schema",
    "trust_ramp_period",
    "velocity_windows",
]
