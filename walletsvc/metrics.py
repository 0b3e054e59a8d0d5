"""The service's Prometheus counters and histograms, importable by every feature.

Outside the feature layers (like ``walletsvc.config``) so that any package can count what it
does without importing the web framework or the composition root. Gauges that describe the
state in the database (payouts by status, pending approvals, balances, freezes, scanner lag)
are read at scrape time instead (walletsvc.bootstrap.state_metrics), so they are right in
every process and after every restart.

Label values are bounded sets (route templates, statuses, rule names, wallet names); never an
id, an address or anything a client chose.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "walletsvc_http_requests_total",
    "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "walletsvc_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["method", "route"],
)
POLICY_DECISIONS = Counter(
    "walletsvc_policy_decisions_total",
    "Policy decisions on payout requests, by outcome",
    ["outcome"],
)
POLICY_RULE_RESULTS = Counter(
    "walletsvc_policy_rule_results_total",
    "Rule results inside policy decisions on payout requests",
    ["rule", "result"],
)
SIGNER_SECONDS = Histogram(
    "walletsvc_signer_seconds",
    "Time the signer took to check and sign a transaction (kernel verification included)",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# Where an emergency freeze spends its time, stage by stage (``POST /v1/freeze``, the CLI and
# automatic freezes): on call can see whether a slow freeze waited for a thread, for the
# signer, for the freeze gate or for the commit (docs/performance.md, "The freeze under load").
FREEZE_STAGE_SECONDS = Histogram(
    "walletsvc_freeze_stage_seconds",
    "Time a freeze spent per stage: queued (for its lane thread), authenticate, signer,"
    " gate (waiting for the freeze gate), record (writing and committing the freeze)",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SIGNER_REFUSALS = Counter(
    "walletsvc_signer_refusals_total",
    "Transactions the signer or the kernel check refused, by error code",
    ["kind", "code"],
)
WEBHOOK_DELIVERIES = Counter(
    "walletsvc_webhook_delivery_attempts_total",
    "Webhook delivery attempts, by event type and outcome (delivered, retrying, failed)",
    ["event_type", "outcome"],
)
# Payout rounds as they are decided (accepted or refused as a whole). The theft shield keeps
# its own counters beside its code (walletsvc.incident.shield: thefts detected, rounds).
PAYOUT_ROUNDS = Counter(
    "walletsvc_payout_rounds_total",
    "Payout rounds decided, by outcome (accepted, refused)",
    ["status"],
)
