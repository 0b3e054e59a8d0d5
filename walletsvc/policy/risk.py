"""Stream risk rules: pure functions over a snapshot of recent requests and chain events.

The decision engine (engine.py) judges one payout request; these rules judge the STREAM
(bursts, rates, crossings, the chain), so the engine skips them and
walletsvc.incident.risk evaluates them after the fact, on every background pass and in the
scanner's block pass. Each finding names its rule, its evidence, and a ``fingerprint`` that
identifies the evidence: the caller reports one fingerprint once, however often a later pass
sees the same evidence again.

Rules fire on a CROSSING (the request that made a count reach its limit), not on every
request while the count stays high, so one burst raises one alert.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .document import (
    ALWAYS_FREEZE,
    CHAIN_KINDS,
    REQUEST_KINDS,
    SIGNER_KINDS,
    STREAM_KINDS,
    PolicyDocument,
    RiskRule,
    VelocityLimit,
    normalize_address,
    parse_duration,
)

__all__ = ["ALWAYS_FREEZE", "CHAIN_KINDS", "REQUEST_KINDS", "SIGNER_KINDS", "STREAM_KINDS"]

BUILTIN_RULES: tuple[RiskRule, ...] = (
    RiskRule(id="signer-failure", kind="signer_failure", action="freeze"),
    RiskRule(id="foreign-spend", kind="foreign_spend", action="freeze"),
)


def window_of(rule: RiskRule) -> timedelta:
    seconds = parse_duration(rule.params["window"])
    assert isinstance(seconds, int)
    return timedelta(seconds=seconds)


def stream_rules(policy: PolicyDocument, kinds: Iterable[str]) -> list[RiskRule]:
    """The policy's rules of ``kinds``, plus a built-in one for each always-freeze kind
    the policy does not configure itself."""
    wanted = frozenset(kinds)
    configured = [r for r in (policy.risk.rules if policy.risk else ()) if r.kind in wanted]
    present = {r.kind for r in configured}
    builtin = [r for r in BUILTIN_RULES if r.kind in wanted and r.kind not in present]
    return sorted(configured, key=lambda r: r.id) + builtin


# --- Findings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    rule_id: str
    kind: str
    action: str  # alert | freeze
    wallet: str | None
    fingerprint: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


def fingerprint(rule: RiskRule, *parts: object) -> str:
    text = "|".join([rule.id, rule.kind, *(str(p) for p in parts)])
    return hashlib.sha256(text.encode()).hexdigest()


def _finding(
    rule: RiskRule, wallet: str | None, key: Sequence[object], summary: str, **evidence: Any
) -> Finding:
    return Finding(
        rule.id, rule.kind, rule.action, wallet, fingerprint(rule, *key), summary, evidence
    )


# --- The request stream -----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One payout request as the stream saw it: accepted (a withdrawal) or denied."""

    ref: str  # the withdrawal id, or "denied:<audit seq>"
    at: datetime
    who: str  # the requester (token or staff actor)
    wallet: str
    destination: str
    amount_sat: int
    outcome: str  # allow | require_approval | deny
    holds: bool  # still holds money (counts toward velocity windows)
    paid_before: bool  # the destination had been paid before this request


@dataclass(frozen=True)
class RequestSnapshot:
    records: tuple[RequestRecord, ...]  # one wallet's, in time order

    def horizon_start(self) -> datetime | None:
        return self.records[0].at if self.records else None


def evaluate_requests(
    rules: Sequence[RiskRule], snapshot: RequestSnapshot, policy: PolicyDocument
) -> list[Finding]:
    """Every finding of the request-stream ``rules`` over ``snapshot`` (pure)."""
    checks: dict[str, Callable[[RiskRule, RequestSnapshot, PolicyDocument], list[Finding]]] = {
        "denied_burst": _denied_burst,
        "request_rate": _request_rate,
        "velocity_fraction": _velocity_fraction,
        "new_destination_large": _new_destination_large,
    }
    found: list[Finding] = []
    for rule in rules:
        check = checks.get(rule.kind)
        if check is not None:
            found.extend(check(rule, snapshot, policy))
    return found


def _crossings(
    records: Sequence[RequestRecord], window: timedelta, limit: int
) -> list[tuple[RequestRecord, list[RequestRecord]]]:
    """Per requester, each record whose window (t - window, t] holds exactly ``limit``
    records: the moment the count reached the limit."""
    by_who: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_who[r.who].append(r)
    out = []
    for rows in by_who.values():
        start = 0
        for end, r in enumerate(rows):
            while rows[start].at <= r.at - window:
                start += 1
            if end - start + 1 == limit:
                out.append((r, rows[start : end + 1]))
    return out


def _denied_burst(rule: RiskRule, snap: RequestSnapshot, _: PolicyDocument) -> list[Finding]:
    count = int(rule.params["count"])
    denied = [r for r in snap.records if r.outcome == "deny"]
    return [
        _finding(
            rule,
            r.wallet,
            (r.ref,),
            f"{count} denied requests from {r.who} within {window_of(rule)}",
            who=r.who,
            denied=[w.ref for w in burst],
            window_s=int(window_of(rule).total_seconds()),
        )
        for r, burst in _crossings(denied, window_of(rule), count)
    ]


def _request_rate(rule: RiskRule, snap: RequestSnapshot, _: PolicyDocument) -> list[Finding]:
    most = int(rule.params["max_count"])
    return [
        _finding(
            rule,
            r.wallet,
            (r.ref,),
            f"more than {most} requests from {r.who} within {window_of(rule)}",
            who=r.who,
            requests=[w.ref for w in burst],
            window_s=int(window_of(rule).total_seconds()),
        )
        for r, burst in _crossings(snap.records, window_of(rule), most + 1)
    ]


def _new_destination_large(
    rule: RiskRule, snap: RequestSnapshot, _: PolicyDocument
) -> list[Finding]:
    least = int(rule.params["min_amount_sat"])
    return [
        _finding(
            rule,
            r.wallet,
            (r.ref,),
            f"{r.amount_sat} sat to {r.destination}, never paid before",
            withdrawal=r.ref,
            destination=r.destination,
            amount_sat=r.amount_sat,
            min_amount_sat=least,
        )
        for r in snap.records
        if r.outcome != "deny" and not r.paid_before and r.amount_sat >= least
    ]


def _velocity_fraction(
    rule: RiskRule, snap: RequestSnapshot, policy: PolicyDocument
) -> list[Finding]:
    pct = int(rule.params["fraction_pct"])
    held = [r for r in snap.records if r.holds]
    found = []
    for limit in policy.velocity:
        for i, r in enumerate(held):
            used = _window_use(limit, held[: i + 1], r)
            crossed = _crossed(limit, used, r, pct)
            if crossed:
                found.append(
                    _finding(
                        rule,
                        r.wallet,
                        (limit.id, r.ref),
                        f"velocity.{limit.id} past {pct}%: {crossed}",
                        withdrawal=r.ref,
                        velocity=limit.id,
                        fraction_pct=pct,
                        detail=crossed,
                    )
                )
    return found


def _window_use(
    limit: VelocityLimit, upto: Sequence[RequestRecord], r: RequestRecord
) -> tuple[int, int]:
    since = r.at - timedelta(seconds=limit.window)
    same = [
        p
        for p in upto
        if p.at > since
        and (
            limit.scope == "wallet"
            or (
                limit.scope == "destination"
                and normalize_address(p.destination) == normalize_address(r.destination)
            )
            or (limit.scope == "token" and p.who == r.who)
        )
    ]
    return sum(p.amount_sat for p in same), len(same)


def _crossed(limit: VelocityLimit, used: tuple[int, int], r: RequestRecord, pct: int) -> str:
    """A description if ``r`` took the window from below ``pct``% of a cap to at/above it."""
    amount, count = used
    if limit.max_amount_sat:
        mark = limit.max_amount_sat * pct / 100
        if amount - r.amount_sat < mark <= amount:
            return f"{amount} of {limit.max_amount_sat} sat"
    if limit.max_count:
        mark = limit.max_count * pct / 100
        if count - 1 < mark <= count:
            return f"{count} of {limit.max_count} payouts"
    return ""


# --- Signer and chain -------------------------------------------------------------------------


def signer_failure(rule: RiskRule, wallet: str | None, ref: str, code: str, detail: str) -> Finding:
    return _finding(
        rule, wallet, (ref,), f"signer integrity failure: {code}", ref=ref, code=code, detail=detail
    )


@dataclass(frozen=True)
class ForeignSpend:
    """Our coin spent by a transaction we never signed."""

    txid: str
    outpoint: str
    amount_sat: int
    wallet: str
    height: int


def foreign_spends(rule: RiskRule, spends: Sequence[ForeignSpend]) -> list[Finding]:
    by_tx: dict[str, list[ForeignSpend]] = defaultdict(list)
    for s in spends:
        by_tx[s.txid].append(s)
    return [
        _finding(
            rule,
            items[0].wallet,
            (txid,),
            f"transaction {txid} spends our coins and is not ours (a stolen key in use?)",
            txid=txid,
            height=items[0].height,
            outpoints=[s.outpoint for s in items],
            amount_sat=sum(s.amount_sat for s in items),
        )
        for txid, items in sorted(by_tx.items())
    ]


@dataclass(frozen=True)
class Payment:
    """An output of one of our transactions to someone else, confirmed at ``at``."""

    txid: str
    vout: int
    script_hex: str
    amount_sat: int
    wallet: str
    at: datetime


def duplicate_payments(
    rule: RiskRule, new: Sequence[Payment], recent: Sequence[Payment]
) -> list[Finding]:
    """``new`` payments (this block) that repeat one in ``new`` or ``recent`` within the
    rule's window: same destination script, same amount."""
    window = window_of(rule)
    found = []
    everything = sorted({*recent, *new}, key=lambda p: (p.at, p.txid, p.vout))
    for p in new:
        twins = [
            q
            for q in everything
            if (q.txid, q.vout) != (p.txid, p.vout)
            and q.script_hex == p.script_hex
            and q.amount_sat == p.amount_sat
            and abs(q.at - p.at) <= window
        ]
        if twins:
            first = min(twins, key=lambda q: (q.at, q.txid, q.vout))
            found.append(
                _finding(
                    rule,
                    p.wallet,
                    sorted([f"{p.txid}:{p.vout}", f"{first.txid}:{first.vout}"]),
                    f"{p.amount_sat} sat paid twice to the same script within {window}",
                    script=p.script_hex,
                    amount_sat=p.amount_sat,
                    outputs=sorted([f"{p.txid}:{p.vout}", f"{first.txid}:{first.vout}"]),
                )
            )
    return found
