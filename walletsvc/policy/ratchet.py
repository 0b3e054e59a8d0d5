"""The ratchet: does a proposed policy only tighten the active one?

Tightening takes effect at once on one approver's word; loosening needs the governance quorum
and then the time lock. The caller enforces that; this module only decides the direction, rule
by rule, and lists every change as ``{path, direction, detail}``.

A change "tightens" when every payout (or governed action) the new document allows, the old one
allowed too, whatever the history. Where that cannot be shown, the change "loosens": a
ratchet that guesses must guess towards the quorum. The reasoning for each rule is in
docs/policy.md ("The ratchet").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .document import (
    GOVERNED_ACTIONS,
    Allowlist,
    ApprovalTier,
    PolicyDocument,
    Quorum,
    VelocityLimit,
    format_duration,
    normalize_address,
    policy_hash,
)

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
    olds, news = _by_key(old.velocity, lambda v: v.id), _by_key(new.velocity, lambda v: v.id)
    changes: list[Change] = []
    for vid in sorted(olds.keys() | news.keys()):
        path = f"velocity.{vid}"
        if vid not in news:
            changes.append(Change(path, "loosen", "limit removed"))
        elif vid not in olds:
            changes.append(Change(path, "tighten", "limit added"))
        else:
            changes += _velocity_limit(path, olds[vid], news[vid])
    return changes


def _velocity_limit(path: str, old: VelocityLimit, new: VelocityLimit) -> list[Change]:
    changes: list[Change] = []
    if old.window != new.window or old.scope != new.scope:
        # Window and scope are judged together with the new bounds: a shorter window alone
        # loosens (the same amount may then leave again sooner), but a shorter window with a
        # small enough bound can be proven no weaker; see velocity_implies.
        strong = velocity_implies(new, old)
        detail = (
            f"{format_duration(old.window)} per {old.scope} -> "
            f"{format_duration(new.window)} per {new.scope}"
        )
        if not strong:
            detail += ": the new limit does not imply the old one"
        changes.append(Change(f"{path}.window", "tighten" if strong else "loosen", detail))
    changes += _lower_is_tighter(
        f"{path}.max_amount_sat", old.max_amount_sat, new.max_amount_sat, " sat"
    )
    changes += _lower_is_tighter(f"{path}.max_count", old.max_count, new.max_count)
    return changes


def velocity_implies(new: VelocityLimit, old: VelocityLimit) -> bool:
    """True if every history the new limit admits, the old one admits too.

    Scope: a wallet-wide sum is at least any per-destination or per-token sum, so a wallet
    scope implies the others; destination and token scopes imply only themselves.

    Window: the engine checks, at each payout, the sum over [t - w, t]. That bounds every
    closed interval of length w (take its last payout t*: the interval lies in [t* - w, t*]).
    An interval of length W is covered by ceil(W / w) intervals of length w, so a bound B over
    w implies a bound ceil(W / w) * B over W. With w >= W that factor is 1: a longer window
    with a bound no higher is always at least as strict.
    """
    if new.scope not in (old.scope, "wallet"):
        return False
    factor = -(-old.window // new.window)  # ceil(old / new), 1 when new >= old
    return _bound_implies(new.max_amount_sat, old.max_amount_sat, factor) and _bound_implies(
        new.max_count, old.max_count, factor
    )


def _bound_implies(new: int | None, old: int | None, factor: int) -> bool:
    if old is None:
        return True
    if new is None:
        return False
    return factor * new <= old


def _allowlist(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    if old.allowlist == new.allowlist:
        return []
    if new.allowlist is None:
        return [Change("allowlist", "loosen", "allowlist rule removed")]
    if old.allowlist is None:
        # Every allowlist setting only adds conditions to a payout (require, ramp, deny), so
        # adding the rule can only take payouts away.
        return [Change("allowlist", "tighten", "allowlist rule added")]
    o, n = old.allowlist, new.allowlist
    changes: list[Change] = []
    if o.required != n.required:
        direction: Direction = "tighten" if n.required else "loosen"
        changes.append(Change("allowlist.required", direction, f"{o.required} -> {n.required}"))
    if o.on_missing != n.on_missing:
        direction = "tighten" if n.on_missing == "deny" else "loosen"
        changes.append(
            Change("allowlist.on_missing", direction, f"{o.on_missing} -> {n.on_missing}")
        )
    # A longer cooling-off keeps a new (possibly attacker-proposed) entry unusable for longer.
    changes += _higher_is_tighter("allowlist.cooling_off", o.cooling_off, n.cooling_off, "duration")
    changes += _trust_ramp(o, n)
    changes += _denylist(o, n)
    return changes


def _allowlist_quorum(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    # Separate from _allowlist: with no explicit allowlist.approval the quorum follows the
    # highest approval tier, so it can change while the allowlist section does not.
    if old.allowlist is None or new.allowlist is None:
        return []
    return _quorum_change(
        "allowlist.approval", _effective_allowlist_quorum(old), _effective_allowlist_quorum(new)
    )


def _effective_allowlist_quorum(doc: PolicyDocument) -> Quorum | None:
    if doc.allowlist is not None and doc.allowlist.approval is not None:
        return doc.allowlist.approval
    if not doc.approval_tiers:
        return None
    top = max(doc.approval_tiers, key=lambda t: t.above_sat)
    return Quorum(group=top.group, m=top.m)


def _trust_ramp(o: Allowlist, n: Allowlist) -> list[Change]:
    if o.trust_ramp == n.trust_ramp:
        return []
    if n.trust_ramp is None:
        return [Change("allowlist.trust_ramp", "loosen", "trust ramp removed")]
    if o.trust_ramp is None:
        return [Change("allowlist.trust_ramp", "tighten", "trust ramp added")]
    path = "allowlist.trust_ramp"
    return _lower_is_tighter(
        f"{path}.initial_max_sat", o.trust_ramp.initial_max_sat, n.trust_ramp.initial_max_sat
    ) + _higher_is_tighter(
        # A longer period means slower doubling and a smaller allowance at every age; the
        # allowance is also measured over that period, but a bound B over a longer window
        # implies B over any shorter one, so both effects point the same way.
        f"{path}.doubling_period",
        o.trust_ramp.doubling_period,
        n.trust_ramp.doubling_period,
        "duration",
    )


def _denylist(o: Allowlist, n: Allowlist) -> list[Change]:
    olds = {normalize_address(a) for a in o.denylist}
    news = {normalize_address(a) for a in n.denylist}
    added = [Change("allowlist.denylist", "tighten", f"{a} denied") for a in sorted(news - olds)]
    removed = [
        Change("allowlist.denylist", "loosen", f"{a} no longer denied") for a in sorted(olds - news)
    ]
    return added + removed


def _approval_tiers(old: PolicyDocument, new: PolicyDocument) -> list[Change]:
    """Compare the requirement as a function of the amount, range by range.

    The requirement is constant between tier thresholds, so looking just above each threshold
    of either document (and at 1 sat) sees every range.
    """
    bounds = sorted({t.above_sat for t in (*old.approval_tiers, *new.approval_tiers)})
    probes = sorted({1, *(b + 1 for b in bounds)})
    changes: list[Change] = []
    for i, amount in enumerate(probes):
        before = _tier_for(old.approval_tiers, amount)
        after = _tier_for(new.approval_tiers, amount)
        if before == after:
            continue
        upper = f" to {probes[i + 1] - 1}" if i + 1 < len(probes) else " up"
        for change in _quorum_change(f"approval_tiers[>{amount - 1}]", before, after):
            detail = f"amounts from {amount}{upper} sat: {change.detail}"
            changes.append(Change(change.path, change.direction, detail))
    return changes


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
    _allowlist,
    _allowlist_quorum,
    _approval_tiers,
    _approval_expiry,
    _governance,
    _hot,
    _risk,
)
