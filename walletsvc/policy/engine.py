"""The decision engine: may this payout leave, at once, after approvals, or not at all?

``evaluate`` is a pure function of the request, a snapshot of the money already on its way
out, the policy document and the time. It returns a ``Decision`` value with a diagnostic for
every rule (after cedar's ``Response { decision, diagnostics }``):

* every rule appears in the trace under a stable id, in a fixed order, even when it is not
  configured (``skip``) or another rule already denied;
* deny wins over require_approval, which wins over allow;
* a rule that raises yields ``error`` and the decision is ``deny``: the engine never fails open;
* the strongest approval requirement wins (largest m; on a tie, the approval tier's).

The caller builds the ``HistorySnapshot`` from indexed queries: either the held payouts
bounded by ``history_horizon(policy)``, or, so that the cost of a decision does not grow with
the wallet's history, one ``HeldTotal`` per ``velocity_windows(policy)`` (an indexed ``SUM``)
plus the request destination's payouts within the trust ramp's period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from walletsvc.domain.money import MAX_MONEY, require_satoshis
from walletsvc.policy.risk import STREAM_KINDS

from .document import (
    MAX_DURATION_SECONDS,
    PolicyDocument,
    Scope,
    VelocityLimit,
    format_duration,
    normalize_address,
    policy_hash,
)

Outcome = Literal["allow", "require_approval", "deny"]
Result = Literal["pass", "fail", "require_approval", "error", "skip"]
AllowlistStatus = Literal["pending", "active", "removed", "denied"]

# Outcome severity, used for "deny wins" and by the monotonicity tests.
OUTCOME_ORDER: dict[Outcome, int] = {"allow": 0, "require_approval": 1, "deny": 2}


@dataclass(frozen=True)
class PayoutRequest:
    wallet: str
    destination: str
    amount_sat: int
    token_id: str | None = None  # the API token that asked; None for staff-made payouts


@dataclass(frozen=True)
class HeldPayout:
    """A payout of the same wallet that still holds money: pending approval, approved, signed,
    broadcast or confirmed. Rejected, cancelled, expired and failed payouts are left out."""

    amount_sat: int
    destination: str
    token_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class AllowlistEntry:
    """The allowlist's view of the request's destination.

    ``active_since`` is when the entry gathered its approvals (None while it waits for them);
    the policy's cooling-off runs from there, so a change of ``cooling_off`` applies to
    existing entries too. ``status`` "denied" puts the address on the denylist.
    """

    address: str
    active_since: datetime | None
    status: AllowlistStatus


@dataclass(frozen=True)
class HeldTotal:
    """The held payouts of one velocity window, summed by the caller (an indexed query).

    ``scope`` is relative to the request: "destination" counts the payouts to the request's
    destination, "token" those made with the request's API token, "wallet" all of them. A
    payout counts when ``created_at >= now - window`` (no upper bound), as on the list path.
    """

    scope: Scope
    window: int  # seconds
    amount_sat: int
    count: int


@dataclass(frozen=True)
class HistorySnapshot:
    """The money already on its way out.

    With ``velocity_totals`` None the velocity rules walk ``payouts`` (every held payout of the
    wallet within ``history_horizon``). With totals given they read those instead, and
    ``payouts`` need only hold the request destination's payouts (for the trust ramp). A
    velocity rule whose window has no total is an error, so it denies.
    """

    payouts: tuple[HeldPayout, ...] = ()
    allowlist_entry: AllowlistEntry | None = None
    velocity_totals: tuple[HeldTotal, ...] | None = None


@dataclass(frozen=True)
class RuleResult:
    rule: str
    result: Result
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "result": self.result, "detail": self.detail}


@dataclass(frozen=True)
class Required:
    group: str
    m: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "m": self.m}


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rules: tuple[RuleResult, ...]
    required: Required | None
    policy_hash: str

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON: ``{outcome, rules: [{rule, result, detail}], required}``.

        ``policy_hash`` is not part of it; the caller stores it next to the decision.
        """
        return {
            "outcome": self.outcome,
            "rules": [r.to_dict() for r in self.rules],
            "required": self.required.to_dict() if self.required else None,
        }


def history_horizon(policy: PolicyDocument) -> timedelta:
    """How far back the caller must fetch held payouts: the longest window any rule looks at."""
    seconds = [v.window for v in policy.velocity]
    if policy.allowlist is not None and policy.allowlist.trust_ramp is not None:
        seconds.append(policy.allowlist.trust_ramp.doubling_period)
    return timedelta(seconds=max(seconds, default=0))


def velocity_windows(policy: PolicyDocument) -> list[tuple[Scope, int]]:
    """The (scope, window in seconds) pairs the velocity rules need a ``HeldTotal`` for."""
    return sorted({(v.scope, v.window) for v in policy.velocity})


def trust_ramp_period(policy: PolicyDocument) -> timedelta | None:
    """How far back the trust ramp looks at the destination's payouts (None: no ramp)."""
    ramp = policy.allowlist.trust_ramp if policy.allowlist is not None else None
    return timedelta(seconds=ramp.doubling_period) if ramp is not None else None


def held_totals(
    request: PayoutRequest, payouts: tuple[HeldPayout, ...], policy: PolicyDocument, now: datetime
) -> tuple[HeldTotal, ...]:
    """The totals ``velocity_totals`` stands for, computed from a list (the reference the
    indexed queries are tested against)."""
    destination = normalize_address(request.destination)
    totals = []
    for scope, window in velocity_windows(policy):
        since = now - timedelta(seconds=window)
        held = [
            p
            for p in payouts
            if _payout_in_scope(scope, p, destination, request.token_id)
            and _aware(p.created_at, "created_at") >= since
        ]
        totals.append(HeldTotal(scope, window, sum(p.amount_sat for p in held), len(held)))
    return tuple(totals)


def approval_deadline(policy: PolicyDocument, created_at: datetime) -> datetime:
    """When a payout waiting for approvals expires."""
    return created_at + policy.approval_expiry_delta


# --- Evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    result: RuleResult
    required: Required | None = None
    from_tier: bool = False


@dataclass(frozen=True)
class _Ctx:
    request: PayoutRequest
    history: HistorySnapshot
    policy: PolicyDocument
    now: datetime
    destination: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", normalize_address(self.request.destination))


_Rule = Callable[[_Ctx], _Verdict]


def evaluate(
    request: PayoutRequest,
    history: HistorySnapshot,
    policy: PolicyDocument,
    now: datetime,
    *,
    revision: str | None = None,
) -> Decision:
    """Decide a payout. Pure and deterministic; never raises for a bad input, it denies.

    ``revision`` is ``policy_hash(policy)`` when the caller already holds it (the stored,
    checked hash of the active policy), saving a canonical serialisation per decision.
    """
    ctx = _Ctx(request, history, policy, now)
    verdicts = [_run(rule_id, rule, ctx) for rule_id, rule in _rules(policy)]
    return _combine(verdicts, revision if revision is not None else policy_hash(policy))


def _rules(policy: PolicyDocument) -> list[tuple[str, _Rule]]:
    """Every rule of the trace, in its fixed order, with its stable id."""
    rules: list[tuple[str, _Rule]] = [
        ("request", _check_request),
        ("denylist", _check_denylist),
        ("max_per_payout", _check_max_per_payout),
    ]
    if policy.velocity:
        for limit in sorted(policy.velocity, key=lambda v: v.id):
            rules.append((f"velocity.{limit.id}", _velocity_rule(limit)))
    else:
        rules.append(("velocity", lambda ctx: _skip("velocity", "no velocity limits")))
    rules += [
        ("allowlist", _check_allowlist),
        ("trust_ramp", _check_trust_ramp),
        ("approval_tier", _check_approval_tier),
    ]
    risk_rules = policy.risk.rules if policy.risk is not None else ()
    if risk_rules:
        for risk_rule in sorted(risk_rules, key=lambda r: r.id):
            rules.append((f"risk.{risk_rule.id}", _risk_rule(risk_rule.id, risk_rule.kind)))
    else:
        rules.append(("risk", lambda ctx: _skip("risk", "no risk rules")))
    return rules


def _run(rule_id: str, rule: _Rule, ctx: _Ctx) -> _Verdict:
    # Default deny: whatever goes wrong inside a rule (a naive datetime, a malformed snapshot,
    # a bug) becomes an "error" result, and any error denies. Never fail open.
    try:
        verdict = rule(ctx)
    except Exception as exc:
        return _Verdict(RuleResult(rule_id, "error", f"{type(exc).__name__}: {exc}"))
    if verdict.result.result == "require_approval" and verdict.required is None:
        return _Verdict(RuleResult(rule_id, "error", "asked for approvals without a quorum"))
    return verdict


def _combine(verdicts: list[_Verdict], revision: str) -> Decision:
    results = tuple(v.result for v in verdicts)
    if any(r.result in ("fail", "error") for r in results):
        return Decision("deny", results, None, revision)
    asks = [v for v in verdicts if v.result.result == "require_approval"]
    if not asks:
        return Decision("allow", results, None, revision)
    # The contract carries one quorum. The strongest wins: largest m, then the amount tier's
    # (it is the one that scales with the money at stake), then the first in the trace.
    strongest = max(asks, key=lambda v: (v.required.m if v.required else 0, v.from_tier))
    return Decision("require_approval", results, strongest.required, revision)


# --- Rules -----------------------------------------------------------------------------------


def _pass(rule: str, detail: str) -> _Verdict:
    return _Verdict(RuleResult(rule, "pass", detail))


def _fail(rule: str, detail: str) -> _Verdict:
    return _Verdict(RuleResult(rule, "fail", detail))


def _skip(rule: str, detail: str) -> _Verdict:
    return _Verdict(RuleResult(rule, "skip", detail))


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} is a naive datetime; times must carry a timezone")
    return moment


def _check_request(ctx: _Ctx) -> _Verdict:
    request, policy = ctx.request, ctx.policy
    _aware(ctx.now, "now")
    require_satoshis(request.amount_sat)
    if not isinstance(request.destination, str) or not request.destination.strip():
        return _fail("request", "no destination")
    if policy.wallet is not None and request.wallet != policy.wallet:
        return _fail("request", f"policy is for wallet {policy.wallet}, not {request.wallet}")
    return _pass("request", f"{request.amount_sat} sat to {request.destination}")


def _check_denylist(ctx: _Ctx) -> _Verdict:
    entry = _entry_for_destination(ctx)
    if entry is not None and entry.status == "denied":
        return _fail("denylist", "destination is denied on the allowlist")
    listed = ctx.policy.allowlist.denylist if ctx.policy.allowlist is not None else ()
    if ctx.destination in {normalize_address(a) for a in listed}:
        return _fail("denylist", "destination is on the policy denylist")
    return _pass("denylist", "destination is not denied")


def _check_max_per_payout(ctx: _Ctx) -> _Verdict:
    limit = ctx.policy.max_per_payout_sat
    if limit is None:
        return _skip("max_per_payout", "no per-payout limit")
    amount = ctx.request.amount_sat
    if amount > limit:
        return _fail("max_per_payout", f"{amount} sat > {limit} sat")
    return _pass("max_per_payout", f"{amount} sat <= {limit} sat")


def _velocity_rule(limit: VelocityLimit) -> _Rule:
    def check(ctx: _Ctx) -> _Verdict:
        return _check_velocity(ctx, limit)

    return check


def _check_velocity(ctx: _Ctx, limit: VelocityLimit) -> _Verdict:
    rule = f"velocity.{limit.id}"
    held_sat, held_count = _held_in_window(ctx, limit)
    # The new request counts too: held + this <= limit.
    total = held_sat + ctx.request.amount_sat
    count = held_count + 1
    where = f"{format_duration(limit.window)} per {limit.scope}"
    problems: list[str] = []
    if limit.max_amount_sat is not None and total > limit.max_amount_sat:
        problems.append(f"{total} sat > {limit.max_amount_sat} sat")
    if limit.max_count is not None and count > limit.max_count:
        problems.append(f"{count} payouts > {limit.max_count}")
    if problems:
        return _fail(rule, f"{where}: " + "; ".join(problems))
    parts = [f"{total} sat"] + ([f"{count} payouts"] if limit.max_count is not None else [])
    caps = [f"{limit.max_amount_sat} sat"] if limit.max_amount_sat is not None else []
    caps += [f"{limit.max_count} payouts"] if limit.max_count is not None else []
    return _pass(rule, f"{where}: {', '.join(parts)} within {', '.join(caps)}")


def _held_in_window(ctx: _Ctx, limit: VelocityLimit) -> tuple[int, int]:
    """(satoshis, count) of the held payouts the limit counts, from the totals or the list."""
    totals = ctx.history.velocity_totals
    if totals is not None:
        for total in totals:
            if (total.scope, total.window) == (limit.scope, limit.window):
                return _checked_total(total)
        raise ValueError(f"the snapshot has no total for {limit.scope} over {limit.window}s")
    since = ctx.now - timedelta(seconds=limit.window)
    # Inclusive lower bound and no upper bound: a payout exactly one window old, or one dated
    # in the future by clock skew, still counts. Erring on the side of counting too much.
    held = [
        p
        for p in ctx.history.payouts
        if _payout_in_scope(limit.scope, p, ctx.destination, ctx.request.token_id)
        and _aware(p.created_at, "created_at") >= since
    ]
    return sum(require_satoshis(p.amount_sat, field="history.amount_sat") for p in held), len(held)


def _checked_total(total: HeldTotal) -> tuple[int, int]:
    # Not require_satoshis on the sum: many held payouts may add up past the supply, and the
    # list path (which checks each payout) would not refuse that either.
    for name, value in (("amount_sat", total.amount_sat), ("count", total.count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"history total {name} must be a non-negative integer: {value!r}")
    if (total.count == 0) != (total.amount_sat == 0):
        raise ValueError("history total: held satoshis without payouts, or payouts without")
    return total.amount_sat, total.count


def _payout_in_scope(
    scope: Scope, payout: HeldPayout, destination: str, token_id: str | None
) -> bool:
    if scope == "wallet":
        return True  # the snapshot holds this wallet's payouts only
    if scope == "destination":
        return normalize_address(payout.destination) == destination
    return payout.token_id == token_id


def _entry_for_destination(ctx: _Ctx) -> AllowlistEntry | None:
    entry = ctx.history.allowlist_entry
    if entry is not None and normalize_address(entry.address) != ctx.destination:
        # A snapshot about another address is a caller bug; refuse rather than trust it.
        raise ValueError("the allowlist entry in the snapshot is for another address")
    return entry


def _usable_from(ctx: _Ctx, entry: AllowlistEntry | None) -> datetime | None:
    """When the entry may first be paid (approved + cooling-off), or None if it never may."""
    allowlist = ctx.policy.allowlist
    if entry is None or allowlist is None or entry.status != "active":
        return None
    if entry.active_since is None:
        return None
    return _aware(entry.active_since, "active_since") + timedelta(seconds=allowlist.cooling_off)


def _check_allowlist(ctx: _Ctx) -> _Verdict:
    allowlist = ctx.policy.allowlist
    if allowlist is None:
        return _skip("allowlist", "no allowlist rule")
    entry = _entry_for_destination(ctx)
    usable_from = _usable_from(ctx, entry)
    if usable_from is not None and usable_from <= _aware(ctx.now, "now"):
        return _pass("allowlist", "destination is on the allowlist")
    if entry is None:
        state = "not on the allowlist"
    elif usable_from is not None:
        state = f"on the allowlist but cooling off until {usable_from.isoformat()}"
    else:
        state = f"allowlist entry is {entry.status}"
    if not allowlist.required:
        return _pass("allowlist", f"{state}; the allowlist is not required")
    if allowlist.on_missing == "deny":
        return _fail("allowlist", state)
    quorum = _allowlist_quorum(ctx.policy)
    return _Verdict(
        RuleResult("allowlist", "require_approval", f"{state}: {quorum.m} of {quorum.group}"),
        quorum,
    )


def _allowlist_quorum(policy: PolicyDocument) -> Required:
    allowlist = policy.allowlist
    if allowlist is not None and allowlist.approval is not None:
        return Required(allowlist.approval.group, allowlist.approval.m)
    if not policy.approval_tiers:
        raise ValueError("no quorum for payouts off the allowlist")  # refused at load, too
    top = max(policy.approval_tiers, key=lambda t: t.above_sat)
    return Required(top.group, top.m)


def _check_trust_ramp(ctx: _Ctx) -> _Verdict:
    allowlist = ctx.policy.allowlist
    ramp = allowlist.trust_ramp if allowlist is not None else None
    if ramp is None:
        return _skip("trust_ramp", "no trust ramp")
    usable_from = _usable_from(ctx, _entry_for_destination(ctx))
    if usable_from is None or usable_from > _aware(ctx.now, "now"):
        # Not (yet) a usable entry: the allowlist rule decides; the ramp is about entries.
        return _skip("trust_ramp", "destination is not a usable allowlist entry")
    cap = ramp_allowance(ramp.initial_max_sat, ramp.doubling_period, ctx.now - usable_from)
    period = timedelta(seconds=ramp.doubling_period)
    since = ctx.now - period
    received = sum(
        p.amount_sat
        for p in ctx.history.payouts
        if normalize_address(p.destination) == ctx.destination
        and _aware(p.created_at, "created_at") >= since
    )
    total = received + ctx.request.amount_sat
    where = f"per {format_duration(ramp.doubling_period)} at this entry's age"
    if total > cap:
        return _fail("trust_ramp", f"{total} sat > {cap} sat allowed {where}")
    return _pass("trust_ramp", f"{total} sat <= {cap} sat allowed {where}")


def ramp_allowance(initial_max_sat: int, doubling_period: int, age: timedelta) -> int:
    """initial * 2^(full periods of age), capped at the supply (and safe from huge powers)."""
    periods = max(0, int(age.total_seconds()) // doubling_period)
    if periods >= 64 or doubling_period > MAX_DURATION_SECONDS:
        return MAX_MONEY
    return int(min(initial_max_sat * (1 << periods), MAX_MONEY))


def _check_approval_tier(ctx: _Ctx) -> _Verdict:
    tiers = ctx.policy.approval_tiers
    if not tiers:
        return _skip("approval_tier", "no approval tiers")
    amount = ctx.request.amount_sat
    matching = [t for t in tiers if amount > t.above_sat]
    if not matching:
        lowest = min(t.above_sat for t in tiers)
        return _pass("approval_tier", f"{amount} sat is not above {lowest} sat")
    tier = max(matching, key=lambda t: t.above_sat)
    return _Verdict(
        RuleResult(
            "approval_tier",
            "require_approval",
            f"{amount} sat > {tier.above_sat} sat: {tier.m} of {tier.group}",
        ),
        Required(tier.group, tier.m),
        from_tier=True,
    )


def _risk_rule(rule_id: str, kind: str) -> _Rule:
    if kind in STREAM_KINDS:
        # Judged over the stream of requests and blocks (walletsvc.incident.risk), not here:
        # one request alone shows no burst, and a stream rule must not deny every payout.
        return lambda ctx: _skip(f"risk.{rule_id}", f"{kind}: a stream rule (risk monitor)")
    return _unknown_risk_rule(kind)


def _unknown_risk_rule(kind: str) -> _Rule:
    def check(ctx: _Ctx) -> _Verdict:
        # Load refuses unknown kinds; if one gets here anyway, not understanding it denies.
        raise NotImplementedError(f"risk rule kind {kind!r} is not known to this engine")

    return check
