"""The ratchet: does a proposed policy only tighten the active one?

Tightening takes effect at once on one approver's word; loosening needs the governance quorum
and then the time lock. The caller enforces that; this module only decides the direction and
lists every change as ``{path, direction, detail}``.

A change "tightens" only if, for every payout and every history, the new document decides at
least as strictly as the old one (walletsvc.policy.engine.evaluate): it never allows what was
denied, never asks a smaller quorum or a different group for the same payout, never allows a
larger budget over any interval or a larger trust-ramp allowance at any age of an entry.
Fields whose effect depends on one another (the cooling-off and the trust ramp, ``required``
and the allowlist's quorum, the tiers and that quorum) are judged together, by outcome. Where
that cannot be shown the change "loosens": a ratchet that guesses must guess towards the
quorum. The reasoning is in docs/policy.md ("The ratchet"); the property tests in
tests/policy/test_ratchet_outcomes.py check it against the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from walletsvc.domain.money import MAX_MONEY

from .document import (
    GOVERNED_ACTIONS,
    Allowlist,
    ApprovalTier,
    PolicyDocument,
    Quorum,
    Shield,
    VelocityLimit,
    format_duration,
    normalize_address,
    policy_hash,
)
from .engine import ramp_allowance

Direction = Literal["tighten", "loosen"]
Overall = Literal["tighten", "loosen", "unchanged"]


@dataclass(frozen=True)
class Change:
    path: str
    direction: Direction
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "direction": self.direction, "detail": self.detail}


@dataclass(frozen=True)
class ChangeAssessment:
    direction: Overall
    changes: tuple[Change, ...]
    old_hash: str
    new_hash: str

    @property
    def loosens(self) -> bool:
        return self.direction == "loosen"

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "changes": [c.to_dict() for c in self.changes],
            "old_hash": self.old_hash,
            "new_hash": self.new_hash,
        }


def compare(old: PolicyDocument, new: PolicyDocument) -> ChangeAssessment:
    """Assess a proposed document ``new`` against the active ``old``."""
    old_hash, new_hash = policy_hash(old), policy_hash(new)
    if old_hash == new_hash:
        return ChangeAssessment("unchanged", (), old_hash, new_hash)
    changes: list[Change] = []
    for check in _CHECKS:
        changes += check(old, new)
    if not changes:
        # The canonical forms differ but no rule below saw why: something this module does
        # not understand changed. Unknown is not tighter.
        changes.append(Change("", "loosen", "the document changed in a way not assessed"))
    loosens = any(c.direction == "loosen" for c in changes)
    return ChangeAssessment("loosen" if loosens else "tighten", tuple(changes), old_hash, new_hash)


# --- Helpers ---------------------------------------------------------------------------------


def _lower_is_tighter(path: str, old: int | None, new: int | None, unit: str = "") -> list[Change]:
    """A limit where None means "no limit": adding or lowering tightens."""
    if old == new:
        return []
    shown = f"{_show(old, unit)} -> {_show(new, unit)}"
    if new is None:
        return [Change(path, "loosen", f"limit removed ({shown})")]
    if old is None or new < old:
        return [Change(path, "tighten", shown)]
    return [Change(path, "loosen", shown)]


def _higher_is_tighter(path: str, old: int, new: int, unit: str = "") -> list[Change]:
    if old == new:
        return []
    direction: Direction = "tighten" if new > old else "loosen"
    return [Change(path, direction, f"{_show(old, unit)} -> {_show(new, unit)}")]


def _show(value: int | None, unit: str) -> str:
    if value is None:
        return "none"
    if unit == "duration":
        return format_duration(value)
    return f"{value}{unit}"


def _quorum_change(path: str, old: Quorum | None, new: Quorum | None) -> list[Change]:
    """More approvals from the same group tighten. A different group is different people:
    not provably stricter, so it loosens."""
    if old == new:
        return []
    shown = f"{_show_quorum(old)} -> {_show_quorum(new)}"
    if old is None:
        return [Change(path, "tighten", shown)]
    if new is None:
        return [Change(path, "loosen", shown)]
    if new.group != old.group:
        return [Change(path, "loosen", f"{shown}: another group")]
    direction: Direction = "tighten" if new.m > old.m else "loosen"
    return [Change(path, direction, shown)]


def _show_quorum(quorum: Quorum | None) -> str:
    return "none" if quorum is None else f"{quorum.m} of {quorum.group}"


_T = TypeVar("_T")


def _by_key(items: Sequence[_T], key: Callable[[_T], str]) -> dict[str, _T]:
    return {key(item): item for item in items}


# --- Rules -----------------------------------------------------------------------------------


def _wallet(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    if old.wallet == new.wallet:
        return []
    # The same rules applied to another wallet (or to all) change who they bind; not a
    # tightening of anything the old document governed.
    return [Change("wallet", "loosen", f"{old.wallet or 'default'} -> {new.wallet or 'default'}")]


def _max_per_payout(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    return _lower_is_tighter(
        "max_per_payout_sat", old.max_per_payout_sat, new.max_per_payout_sat, " sat"
    )


def _velocity(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    """Limits are judged by what they deny, not by their ids: an old limit still bounds every
    payout if each of its bounds is implied by some new limit (a rename keeps it)."""
    olds, news = _by_key(old.velocity, lambda v: v.id), _by_key(new.velocity, lambda v: v.id)
    changes: list[Change] = []
    for vid in sorted(olds.keys() | news.keys()):
        path = f"velocity.{vid}"
        if vid not in olds:
            changes.append(Change(path, "tighten", "limit added"))
            continue
        before, after = olds[vid], news.get(vid)
        if before == after:
            continue
        kept = _still_bounded(before, new.velocity)
        if after is None:
            detail = "limit removed" + ("; the new limits imply its bounds" if kept else "")
            changes.append(Change(path, "tighten" if kept else "loosen", detail))
        else:
            changes += _velocity_limit(path, before, after, kept)
    return changes


def _velocity_limit(path: str, old: VelocityLimit, new: VelocityLimit, kept: bool) -> list[Change]:
    changes: list[Change] = []
    if old.window != new.window or old.scope != new.scope:
        detail = (
            f"{format_duration(old.window)} per {old.scope} -> "
            f"{format_duration(new.window)} per {new.scope}"
        )
        if not kept:
            detail += ": the new limits do not imply the old one"
        changes.append(Change(f"{path}.window", "tighten" if kept else "loosen", detail))
    bounds = _lower_is_tighter(
        f"{path}.max_amount_sat", old.max_amount_sat, new.max_amount_sat, " sat"
    ) + _lower_is_tighter(f"{path}.max_count", old.max_count, new.max_count)
    if kept:
        # Another limit still holds the old bound (e.g. a raised count another limit caps).
        bounds = [
            Change(c.path, "tighten", c.detail + " (implied by the new limits)") for c in bounds
        ]
    return changes + bounds


def _still_bounded(old: VelocityLimit, news: Sequence[VelocityLimit]) -> bool:
    return all(
        any(_bound_implied(limit, old, bound) for limit in news)
        for bound in ("max_amount_sat", "max_count")
    )


def velocity_implies(new: VelocityLimit, old: VelocityLimit) -> bool:
    """True if the new limit denies every request the old one denies, whatever the history.

    The engine checks, at each payout, the held sum in [t - w, t] plus the request. A limit
    with a window at least as long and a scope at least as wide (a wallet-wide sum is at
    least any per-destination or per-token sum) sees at least the same sum, so a bound no
    higher denies at least as much. A shorter window never does: the old limit's history
    may lie just outside it. That history exists at the moment the change applies (payouts
    made under the old policy), so a 1h/100 limit does not replace a 2h/200 one even though
    it bounds any 2 h of payouts made under it alone. A bound of 0 denies every request.
    """
    return _bound_implied(new, old, "max_amount_sat") and _bound_implied(new, old, "max_count")


def _bound_implied(new: VelocityLimit, old: VelocityLimit, bound: str) -> bool:
    old_bound: int | None = getattr(old, bound)
    new_bound: int | None = getattr(new, bound)
    if old_bound is None:
        return True
    if new_bound is None:
        return False
    if new_bound == 0:
        return True  # the request alone (>= 1 sat, 1 payout) is over it
    wider = new.scope in (old.scope, "wallet") and new.window >= old.window
    return wider and new_bound <= old_bound


def _denylist(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    olds = {normalize_address(a) for a in (old.allowlist.denylist if old.allowlist else ())}
    news = {normalize_address(a) for a in (new.allowlist.denylist if new.allowlist else ())}
    added = [Change("allowlist.denylist", "tighten", f"{a} denied") for a in sorted(news - olds)]
    removed = [
        Change("allowlist.denylist", "loosen", f"{a} no longer denied") for a in sorted(olds - news)
    ]
    return added + removed


# --- Who approves a payout, and may it leave at all: judged together --------------------------
#
# The allowlist's cooling-off, required/on_missing and quorum, the trust ramp and the approval
# tiers all decide one thing together: for a payout of amount a to a destination whose
# allowlist entry is of age A (or not usable), is it denied, and if not, which single quorum
# (the largest m; on a tie the tier's) must approve it? The fields are listed as they changed;
# each is a tightening unless one of the outcome checks below finds a payout decided more
# loosely, and then that finding is reported under the field it is blamed on.

GateKind = Literal["free", "ramp", "deny", "ask"]


@dataclass(frozen=True)
class _Gate:
    """What the allowlist does to a payout to a destination of a given entry age."""

    kind: GateKind
    quorum: Quorum | None = None

    def show(self) -> str:
        return {
            "free": "no allowlist condition",
            "ramp": "the trust ramp",
            "deny": "denied",
            "ask": f"{_show_quorum(self.quorum)} must approve",
        }[self.kind]


def _gate(doc: PolicyDocument, age: int | None) -> _Gate:
    """``age`` since the entry's approval in seconds; None for no usable entry at all."""
    allowlist = doc.allowlist
    if allowlist is None:
        return _Gate("free")
    if age is not None and age >= allowlist.cooling_off:
        return _Gate("ramp" if allowlist.trust_ramp is not None else "free")
    if not allowlist.required:
        return _Gate("free")  # the engine skips the ramp for an entry not yet usable
    if allowlist.on_missing == "deny":
        return _Gate("deny")
    return _Gate("ask", _effective_allowlist_quorum(doc))


def _required(doc: PolicyDocument, gate: _Gate, amount: int) -> Quorum | None:
    """The one quorum the engine asks for (engine._combine): largest m, a tie to the tier."""
    tier = _tier_for(doc.approval_tiers, amount)
    if gate.quorum is None:
        return tier
    if tier is None or gate.quorum.m > tier.m:
        return gate.quorum
    return tier


def _at_least_as_strict(old: Quorum | None, new: Quorum | None) -> bool:
    if old is None:
        return True
    return new is not None and new.group == old.group and new.m >= old.m


def _payout_approvals(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    diffs = _allowlist_diffs(old, new) + _tier_diffs(old, new)
    findings = _gate_findings(old, new) + _ramp_findings(old, new)
    blamed: dict[str, str] = {}
    for path, detail in findings:
        blamed.setdefault(path, detail)
    changes: list[Change] = []
    for path, detail in diffs:
        if path in blamed:
            changes.append(Change(path, "loosen", f"{detail}: {blamed.pop(path)}"))
        else:
            changes.append(Change(path, "tighten", detail))
    changes += [Change(path, "loosen", detail) for path, detail in blamed.items()]
    return changes


def _age_probes(old: PolicyDocument, new: PolicyDocument) -> list[int | None]:
    """One entry age per range where both gates are constant: none, then each cooling-off."""
    offs = {d.allowlist.cooling_off for d in (old, new) if d.allowlist is not None}
    return [None, *sorted(offs)]


def _amount_probes(old: PolicyDocument, new: PolicyDocument) -> list[int]:
    """One amount per range where both tier requirements are constant."""
    bounds = {t.above_sat + 1 for t in (*old.approval_tiers, *new.approval_tiers)}
    return sorted(a for a in {1, *bounds} if a <= MAX_MONEY)


def _where(ages: list[int | None], i: int) -> str:
    age = ages[i]
    if age is None:
        return "to destinations without a usable allowlist entry"
    if i + 1 < len(ages):
        return (
            f"to allowlist entries aged {format_duration(age)} to "
            f"{format_duration(ages[i + 1] or 0)}"
        )
    return f"to allowlist entries aged {format_duration(age)} or more"


def _gate_findings(old: PolicyDocument, new: PolicyDocument) -> list[tuple[str, str]]:
    findings: list[tuple[str, str]] = []
    ages = _age_probes(old, new)
    amounts = _amount_probes(old, new)
    for i, age in enumerate(ages):
        before, after = _gate(old, age), _gate(new, age)
        where = _where(ages, i)
        if after.kind == "deny":
            continue
        if before.kind == "deny" or (before.kind == "ramp" and after.kind != "ramp"):
            path = _gate_path(old, new, age)
            findings.append((path, f"payouts {where}: {before.show()} -> {after.show()}"))
            continue
        for j, amount in enumerate(amounts):
            was, now = _required(old, before, amount), _required(new, after, amount)
            if _at_least_as_strict(was, now):
                continue
            upper = f"{amounts[j + 1] - 1}" if j + 1 < len(amounts) else "more"
            path = (
                f"approval_tiers[>{amount - 1}]"
                if _tier_for(old.approval_tiers, amount) != _tier_for(new.approval_tiers, amount)
                else _gate_path(old, new, age)
            )
            detail = (
                f"payouts of {amount} to {upper} sat {where}: "
                f"{_show_quorum(was)} -> {_show_quorum(now)}"
            )
            findings.append((path, detail))
    return findings


def _gate_path(old: PolicyDocument, new: PolicyDocument, age: int | None) -> str:
    """The field a change of the allowlist's effect on entries of this age is blamed on."""
    o, n = old.allowlist, new.allowlist
    if o is None or n is None:
        return "allowlist"
    if (
        age is not None
        and o.cooling_off != n.cooling_off
        and age < max(o.cooling_off, n.cooling_off)
    ):
        return "allowlist.cooling_off"
    if age is not None and (o.trust_ramp is None) != (n.trust_ramp is None):
        return "allowlist.trust_ramp"
    if o.required != n.required:
        return "allowlist.required"
    if o.on_missing != n.on_missing:
        return "allowlist.on_missing"
    return "allowlist.approval"


def _ramp_findings(old: PolicyDocument, new: PolicyDocument) -> list[tuple[str, str]]:
    """Where both ramps apply (entries past both cooling-offs), the new allowance may be no
    larger at any age, measured over a period no shorter."""
    o, n = old.allowlist, new.allowlist
    if o is None or n is None or o.trust_ramp is None or n.trust_ramp is None:
        return []
    path = "allowlist.trust_ramp"
    if n.trust_ramp.doubling_period < o.trust_ramp.doubling_period:
        detail = "the allowance is measured over a shorter period, so fewer payouts count"
        return [(f"{path}.doubling_period", detail)]
    age = _larger_allowance_at(o, n)
    if age is None:
        return []
    if o.trust_ramp.initial_max_sat != n.trust_ramp.initial_max_sat:
        blamed = f"{path}.initial_max_sat"
    elif o.cooling_off != n.cooling_off:
        blamed = "allowlist.cooling_off"
    else:
        blamed = f"{path}.doubling_period"
    return [(blamed, f"a larger allowance for entries aged {format_duration(age)}")]


def _larger_allowance_at(o: Allowlist, n: Allowlist) -> int | None:
    """The first entry age at which the new ramp allows more than the old one, if any.

    Both allowances are non-decreasing step functions of the age, so comparing them where
    both first apply and wherever the new one steps up covers every age.
    """
    old_cap, new_cap = _allowance(o), _allowance(n)
    start = max(o.cooling_off, n.cooling_off)
    period = n.trust_ramp.doubling_period if n.trust_ramp is not None else 1
    steps = [n.cooling_off + k * period for k in range(66)]  # 2^64: past the supply
    for age in [start, *(s for s in steps if s > start)]:
        allowed = new_cap(age)
        if allowed > old_cap(age):
            return age
        if allowed >= MAX_MONEY:
            return None
    return None


def _allowance(allowlist: Allowlist) -> Callable[[int], int]:
    """The ramp's allowance at an entry age (seconds since approval), as the engine sees it."""
    ramp = allowlist.trust_ramp

    def at(age: int) -> int:
        if ramp is None:
            return MAX_MONEY
        elapsed = timedelta(seconds=age - allowlist.cooling_off)
        return ramp_allowance(ramp.initial_max_sat, ramp.doubling_period, elapsed)

    return at


def _allowlist_diffs(old: PolicyDocument, new: PolicyDocument) -> list[tuple[str, str]]:
    o, n = old.allowlist, new.allowlist
    if o is None and n is None:
        return []
    if o is None or n is None:
        return [("allowlist", "allowlist rule added" if o is None else "allowlist rule removed")]
    diffs: list[tuple[str, str]] = []
    for name in ("required", "on_missing"):
        if getattr(o, name) != getattr(n, name):
            diffs.append((f"allowlist.{name}", f"{getattr(o, name)} -> {getattr(n, name)}"))
    if o.cooling_off != n.cooling_off:
        shown = f"{format_duration(o.cooling_off)} -> {format_duration(n.cooling_off)}"
        diffs.append(("allowlist.cooling_off", shown))
    diffs += _ramp_diffs(o, n)
    # Without its own ``approval`` the quorum follows the highest tier, so it can change
    # while the allowlist section does not.
    before, after = _effective_allowlist_quorum(old), _effective_allowlist_quorum(new)
    if before != after:
        diffs.append(("allowlist.approval", f"{_show_quorum(before)} -> {_show_quorum(after)}"))
    return diffs


def _ramp_diffs(o: Allowlist, n: Allowlist) -> list[tuple[str, str]]:
    path = "allowlist.trust_ramp"
    if o.trust_ramp == n.trust_ramp:
        return []
    if o.trust_ramp is None or n.trust_ramp is None:
        return [(path, "trust ramp added" if o.trust_ramp is None else "trust ramp removed")]
    diffs: list[tuple[str, str]] = []
    if o.trust_ramp.initial_max_sat != n.trust_ramp.initial_max_sat:
        shown = f"{o.trust_ramp.initial_max_sat} -> {n.trust_ramp.initial_max_sat}"
        diffs.append((f"{path}.initial_max_sat", shown))
    if o.trust_ramp.doubling_period != n.trust_ramp.doubling_period:
        shown = (
            f"{format_duration(o.trust_ramp.doubling_period)} -> "
            f"{format_duration(n.trust_ramp.doubling_period)}"
        )
        diffs.append((f"{path}.doubling_period", shown))
    return diffs


def _effective_allowlist_quorum(doc: PolicyDocument) -> Quorum | None:
    if doc.allowlist is not None and doc.allowlist.approval is not None:
        return doc.allowlist.approval
    if not doc.approval_tiers:
        return None
    top = max(doc.approval_tiers, key=lambda t: t.above_sat)
    return Quorum(group=top.group, m=top.m)


def _tier_diffs(old: PolicyDocument, new: PolicyDocument) -> list[tuple[str, str]]:
    """The tier requirement as a function of the amount, range by range (constant between
    thresholds, so looking just above each threshold of either document sees every range)."""
    amounts = _amount_probes(old, new)
    diffs: list[tuple[str, str]] = []
    for i, amount in enumerate(amounts):
        before = _tier_for(old.approval_tiers, amount)
        after = _tier_for(new.approval_tiers, amount)
        if before != after:
            upper = f" to {amounts[i + 1] - 1}" if i + 1 < len(amounts) else " up"
            shown = (
                f"amounts from {amount}{upper} sat: {_show_quorum(before)} -> {_show_quorum(after)}"
            )
            diffs.append((f"approval_tiers[>{amount - 1}]", shown))
    return diffs


def _tier_for(tiers: Sequence[ApprovalTier], amount: int) -> Quorum | None:
    matching = [t for t in tiers if amount > t.above_sat]
    if not matching:
        return None
    top = max(matching, key=lambda t: t.above_sat)
    return Quorum(group=top.group, m=top.m)


def _approval_expiry(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    # Less time for approvals to gather: stale requests die sooner. Never lets more money out.
    if old.approval_expiry == new.approval_expiry:
        return []
    direction: Direction = "tighten" if new.approval_expiry < old.approval_expiry else "loosen"
    shown = f"{format_duration(old.approval_expiry)} -> {format_duration(new.approval_expiry)}"
    return [Change("approval_expiry", direction, shown)]


def _governance(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    changes: list[Change] = []
    for action in GOVERNED_ACTIONS:
        changes += _quorum_change(
            f"governance.{action}", old.quorum_for(action), new.quorum_for(action)
        )
    changes += _higher_is_tighter(
        "governance.policy_change_timelock",
        old.governance.policy_change_timelock,
        new.governance.policy_change_timelock,
        "duration",
    )
    return changes


def _hot(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    # Less money kept hot is less money a thief can reach: lower thresholds tighten. Without
    # a hot section nothing is swept to cold, so adding one tightens and removing it loosens.
    if old.hot == new.hot:
        return []
    if new.hot is None:
        return [Change("hot", "loosen", "hot thresholds removed")]
    if old.hot is None:
        return [Change("hot", "tighten", "hot thresholds added")]
    changes: list[Change] = []
    for name in ("ceiling_sat", "target_sat", "floor_sat"):
        changes += _lower_is_tighter(
            f"hot.{name}", getattr(old.hot, name), getattr(new.hot, name), " sat"
        )
    return changes


def _shield(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    # Either way a change moves money: a lower budget lets a thief outbid the shield sooner, a
    # higher one hands more to miners. Neither is judged safe, so any change is a loosening.
    if old.shield == new.shield:
        return []
    return [Change("shield", "loosen", f"{_shield_text(old)} -> {_shield_text(new)}")]


def _shield_text(doc: PolicyDocument) -> str:
    shield = doc.shield or Shield()
    if shield.everything_to_fees:
        return "everything to fees"
    return f"up to {shield.fee_percent}% in fees"


def _risk(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    olds = _by_key(old.risk.rules if old.risk else (), lambda r: r.id)
    news = _by_key(new.risk.rules if new.risk else (), lambda r: r.id)
    changes: list[Change] = []
    for rid in sorted(olds.keys() | news.keys()):
        path = f"risk.{rid}"
        if rid not in news:
            changes.append(Change(path, "loosen", "risk rule removed"))
        elif rid not in olds:
            changes.append(Change(path, "tighten", "risk rule added"))
        elif olds[rid] != news[rid]:
            # Parameters of rules this module cannot reason about: assume the worst.
            changes.append(Change(path, "loosen", "risk rule changed"))
    return changes


def _version(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    if old.version == new.version:
        return []
    return [Change("version", "loosen", f"{old.version} -> {new.version}")]


_CHECKS: tuple[Callable[[PolicyDocument, PolicyDocument], list[Change]], ...] = (
    _version,
    _wallet,
    _max_per_payout,
    _velocity,
    _denylist,
    _payout_approvals,
    _approval_expiry,
    _governance,
    _hot,
    _risk,
    _shield,
)
