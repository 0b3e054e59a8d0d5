"""The ratchet: which policy changes only tighten."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from walletsvc.policy import (
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    PolicyError,
    compare,
    evaluate,
    load_policy_yaml,
    parse_policy,
)
from walletsvc.policy.document import VelocityLimit, canonical_dict
from walletsvc.policy.engine import OUTCOME_ORDER
from walletsvc.policy.ratchet import velocity_implies

from .factories import NOW, WALLET, held, history, make_policy, policy_dict, request
from .strategies import DESTS, TOKENS, WINDOWS, policies, snapshots
from .test_document import DEFAULT_YAML, YAML_A, YAML_B

TIERS = [
    {"above_sat": 10_000, "group": "treasury", "m": 2},
    {"above_sat": 100_000, "group": "treasury", "m": 3},
]
VEL = {"id": "v", "window": "2h", "scope": "destination", "max_amount_sat": 200, "max_count": 10}
ALLOW = {
    "required": True,
    "on_missing": "deny",
    "cooling_off": "24h",
    "trust_ramp": {"initial_max_sat": 1_000, "doubling_period": "1d"},
    "denylist": ["bcrt1qaaa"],
}
BASE: dict[str, Any] = {
    "max_per_payout_sat": 50_000,
    "velocity": [VEL],
    "allowlist": ALLOW,
    "approval_tiers": TIERS,
    "hot": {"ceiling_sat": 1_000, "target_sat": 500, "floor_sat": 100},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with one value replaced (None deletes it); path like 'velocity.0.window'."""
    doc = policy_dict(**BASE)
    *parents, leaf = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(leaf) if isinstance(target, list) else leaf
    if value is None:
        del target[key]
    else:
        target[key] = value
    return doc


# (name, path, new value, overall direction, the path the change is reported under)
SINGLE_CHANGES: list[tuple[str, str, Any, str, str]] = [
    ("lower max", "max_per_payout_sat", 40_000, "tighten", "max_per_payout_sat"),
    ("raise max", "max_per_payout_sat", 60_000, "loosen", "max_per_payout_sat"),
    ("drop max", "max_per_payout_sat", None, "loosen", "max_per_payout_sat"),
    (
        "lower velocity amount",
        "velocity.0.max_amount_sat",
        150,
        "tighten",
        "velocity.v.max_amount_sat",
    ),
    (
        "raise velocity amount",
        "velocity.0.max_amount_sat",
        250,
        "loosen",
        "velocity.v.max_amount_sat",
    ),
    ("lower velocity count", "velocity.0.max_count", 9, "tighten", "velocity.v.max_count"),
    ("drop velocity count", "velocity.0.max_count", None, "loosen", "velocity.v.max_count"),
    ("longer window", "velocity.0.window", "3h", "tighten", "velocity.v.window"),
    # A shorter window lets the same amount leave again sooner.
    ("shorter window", "velocity.0.window", "1h", "loosen", "velocity.v.window"),
    ("scope to wallet", "velocity.0.scope", "wallet", "tighten", "velocity.v.window"),
    ("scope to token", "velocity.0.scope", "token", "loosen", "velocity.v.window"),
    ("drop velocity", "velocity", [], "loosen", "velocity.v"),
    # (A second limit identical to the first adds nothing, and removing it takes nothing away:
    # see test_velocity_limits_are_judged_by_what_they_deny.)
    (
        "add velocity",
        "velocity",
        [VEL, {**VEL, "id": "w", "window": "4h"}],
        "tighten",
        "velocity.w",
    ),
    ("allowlist optional", "allowlist.required", False, "loosen", "allowlist.required"),
    (
        "missing asks approval",
        "allowlist.on_missing",
        "require_approval",
        "loosen",
        "allowlist.on_missing",
    ),
    ("longer cooling-off", "allowlist.cooling_off", "48h", "tighten", "allowlist.cooling_off"),
    ("shorter cooling-off", "allowlist.cooling_off", "1h", "loosen", "allowlist.cooling_off"),
    ("drop ramp", "allowlist.trust_ramp", None, "loosen", "allowlist.trust_ramp"),
    (
        "smaller ramp start",
        "allowlist.trust_ramp.initial_max_sat",
        500,
        "tighten",
        "allowlist.trust_ramp.initial_max_sat",
    ),
    (
        "slower ramp",
        "allowlist.trust_ramp.doubling_period",
        "2d",
        "tighten",
        "allowlist.trust_ramp.doubling_period",
    ),
    (
        "faster ramp",
        "allowlist.trust_ramp.doubling_period",
        "12h",
        "loosen",
        "allowlist.trust_ramp.doubling_period",
    ),
    (
        "deny more",
        "allowlist.denylist",
        ["bcrt1qaaa", "bcrt1qbbb"],
        "tighten",
        "allowlist.denylist",
    ),
    ("deny less", "allowlist.denylist", [], "loosen", "allowlist.denylist"),
    ("drop allowlist", "allowlist", None, "loosen", "allowlist"),
    ("raise tier m", "approval_tiers.1.m", 4, "tighten", "approval_tiers[>100000]"),
    ("lower tier m", "approval_tiers.1.m", 2, "loosen", "approval_tiers[>100000]"),
    (
        "lower tier threshold",
        "approval_tiers.0.above_sat",
        5_000,
        "tighten",
        "approval_tiers[>5000]",
    ),
    (
        "raise tier threshold",
        "approval_tiers.0.above_sat",
        20_000,
        "loosen",
        "approval_tiers[>10000]",
    ),
    ("other tier group", "approval_tiers.1.group", "board", "loosen", "approval_tiers[>100000]"),
    ("drop tiers", "approval_tiers", [], "loosen", "approval_tiers[>10000]"),
    ("shorter expiry", "approval_expiry", "12h", "tighten", "approval_expiry"),
    ("longer expiry", "approval_expiry", "48h", "loosen", "approval_expiry"),
    ("raise quorum", "governance.unfreeze.m", 3, "tighten", "governance.unfreeze"),
    ("lower quorum", "governance.policy_change.m", 1, "loosen", "governance.policy_change"),
    (
        "other quorum group",
        "governance.key_rotation.group",
        "ops",
        "loosen",
        "governance.key_rotation",
    ),
    (
        "shorter timelock",
        "governance.policy_change_timelock",
        "24h",
        "loosen",
        "governance.policy_change_timelock",
    ),
    (
        "longer timelock",
        "governance.policy_change_timelock",
        "72h",
        "tighten",
        "governance.policy_change_timelock",
    ),
    ("lower hot ceiling", "hot.ceiling_sat", 900, "tighten", "hot.ceiling_sat"),
    ("raise hot ceiling", "hot.ceiling_sat", 2_000, "loosen", "hot.ceiling_sat"),
    ("drop hot", "hot", None, "loosen", "hot"),
    ("another wallet", "wallet", "exchange", "loosen", "wallet"),
]


@pytest.mark.parametrize(
    ("path", "value", "direction", "reported"),
    [(p, v, d, r) for _, p, v, d, r in SINGLE_CHANGES],
    ids=[n for n, *_ in SINGLE_CHANGES],
)
def test_single_change(path: str, value: Any, direction: str, reported: str) -> None:
    old = make_policy(**BASE)
    new = parse_policy(_with(path, value))
    assessment = compare(old, new)
    assert assessment.direction == direction, assessment.to_dict()
    assert any(c.path == reported and c.direction == direction for c in assessment.changes), (
        assessment.to_dict()
    )
    # Undoing the change goes the other way, except for changes that are not comparable
    # (another group, scope or wallet): those loosen both ways.
    back = compare(new, old)
    undone = "loosen" if direction == "tighten" or path in INCOMPARABLE else "tighten"
    assert back.direction == undone, back.to_dict()


INCOMPARABLE = {
    "velocity.0.scope",
    "approval_tiers.1.group",
    "governance.key_rotation.group",
    "wallet",
}


ADDED_RULES = ["max_per_payout_sat", "velocity", "allowlist", "approval_tiers", "hot"]


@pytest.mark.parametrize("rule", ADDED_RULES)
def test_adding_a_rule_tightens_and_removing_it_loosens(rule: str) -> None:
    without = make_policy(**{k: v for k, v in BASE.items() if k != rule})
    with_rule = make_policy(**BASE)
    assert compare(without, with_rule).direction == "tighten"
    assert compare(with_rule, without).direction == "loosen"


def test_identical_documents_are_unchanged() -> None:
    doc = load_policy_yaml(DEFAULT_YAML.read_text())
    assessment = compare(doc, load_policy_yaml(DEFAULT_YAML.read_text()))
    assert assessment.direction == "unchanged"
    assert assessment.changes == ()
    assert compare(load_policy_yaml(YAML_A), load_policy_yaml(YAML_B)).direction == "unchanged"


def test_a_loosening_among_tightenings_loosens() -> None:
    doc = _with("max_per_payout_sat", 10_000)
    doc["governance"]["unfreeze"]["m"] = 1
    assessment = compare(make_policy(**BASE), parse_policy(doc))
    assert assessment.direction == "loosen"
    assert {(c.path, c.direction) for c in assessment.changes} == {
        ("max_per_payout_sat", "tighten"),
        ("governance.unfreeze", "loosen"),
    }


@pytest.mark.parametrize(
    ("new_window", "new_amount", "direction"),
    [
        # A shorter window never implies a longer one, whatever its bound: payouts made under
        # the old policy just outside the new window still count for the old one (see
        # test_a_shorter_window_lets_the_old_windows_money_out_again).
        ("1h", 100, "loosen"),
        ("90m", 100, "loosen"),
        ("40m", 66, "loosen"),
        ("1h", 0, "tighten"),  # a bound of 0 denies every payout
        ("4h", 200, "tighten"),
        ("4h", 201, "loosen"),
    ],
)
def test_window_change_is_judged_with_the_new_bound(
    new_window: str, new_amount: int, direction: str
) -> None:
    old = make_policy(velocity=[{"id": "v", "window": "2h", "max_amount_sat": 200}])
    new = make_policy(velocity=[{"id": "v", "window": new_window, "max_amount_sat": new_amount}])
    assert compare(old, new).direction == direction


def test_a_shorter_window_lets_the_old_windows_money_out_again() -> None:
    old = make_policy(velocity=[{"id": "v", "window": "2h", "max_amount_sat": 200}])
    new = make_policy(velocity=[{"id": "v", "window": "1h", "max_amount_sat": 100}])
    # 150 sat left 90 minutes ago, under the old policy; 60 more now is 210 in 2 hours.
    snapshot = history(held(150, ago=timedelta(minutes=90)))
    assert evaluate(request(60), snapshot, old, NOW).outcome == "deny"
    assert evaluate(request(60), snapshot, new, NOW).outcome == "allow"
    assert compare(old, new).direction == "loosen"


def test_velocity_limits_are_judged_by_what_they_deny() -> None:
    limit = {"id": "v", "window": "2h", "scope": "destination", "max_amount_sat": 200}
    renamed = make_policy(velocity=[{**limit, "id": "w"}])
    assert compare(make_policy(velocity=[limit]), renamed).direction == "tighten"
    # A count bound moved to another, wider limit still bounds the same payouts.
    split = [
        {**limit, "max_count": 5},
        {"id": "all", "window": "1d", "scope": "wallet", "max_count": 3},
    ]
    moved = [{**limit}, {"id": "all", "window": "1d", "scope": "wallet", "max_count": 3}]
    assert compare(make_policy(velocity=split), make_policy(velocity=moved)).direction == "tighten"
    # Split into two narrower limits: neither bounds the wallet's sum.
    wallet = {"id": "v", "window": "2h", "scope": "wallet", "max_amount_sat": 200}
    halves = [
        {"id": "a", "window": "2h", "scope": "token", "max_amount_sat": 100},
        {"id": "b", "window": "2h", "scope": "destination", "max_amount_sat": 100},
    ]
    assert compare(make_policy(velocity=[wallet]), make_policy(velocity=halves)).loosens


def test_tier_and_allowlist_quorum_follow_the_highest_tier() -> None:
    # The allowlist's quorum defaults to the highest tier's, so raising that tier's m raises
    # both; the ratchet reports both.
    doc = _with("allowlist.on_missing", "require_approval")
    old = parse_policy(doc)
    doc["approval_tiers"][1]["m"] = 4
    paths = {c.path for c in compare(old, parse_policy(doc)).changes}
    assert paths == {"approval_tiers[>100000]", "allowlist.approval"}


def test_assessment_to_dict() -> None:
    a = make_policy(**BASE)
    data = compare(a, parse_policy(_with("max_per_payout_sat", 1))).to_dict()
    assert data["direction"] == "tighten"
    assert data["changes"] == [
        {"path": "max_per_payout_sat", "direction": "tighten", "detail": "50000 sat -> 1 sat"}
    ]
    assert len(data["old_hash"]) == len(data["new_hash"]) == 64


# --- Properties ------------------------------------------------------------------------------

# Numeric limits of BASE where lower is stricter (True) or higher is stricter (False).
NUMERIC = [
    ("max_per_payout_sat", True),
    ("velocity.0.max_amount_sat", True),
    ("velocity.0.max_count", True),
    ("allowlist.cooling_off", False),
    ("allowlist.trust_ramp.initial_max_sat", True),
    ("approval_tiers.1.m", False),
    ("approval_expiry", True),
    ("governance.allowlist_add.m", False),
    ("governance.policy_change_timelock", False),
    ("hot.floor_sat", True),
]


def _get(path: str) -> int:
    target: Any = canonical_dict(make_policy(**BASE))
    for part in path.split("."):
        target = target[int(part)] if isinstance(target, list) else target[part]
    return int(target)


@given(st.sampled_from(NUMERIC), st.integers(1, 50))
def test_moving_one_numeric_limit(limit: tuple[str, bool], delta: int) -> None:
    path, lower_is_stricter = limit
    value = _get(path)
    stricter, looser = (
        (value - delta, value + delta) if lower_is_stricter else (value + delta, value - delta)
    )
    old = make_policy(**BASE)
    for new_value, expected in ((stricter, "tighten"), (looser, "loosen")):
        try:
            new = parse_policy(_with(path, new_value))
        except Exception:
            continue  # out of the field's range (e.g. m = 0, hot floor above target)
        assert compare(old, new).direction == expected


@settings(max_examples=200)
@given(policies())
def test_compare_with_itself_is_unchanged(doc: Any) -> None:
    assert compare(doc, doc).direction == "unchanged"
    assert compare(doc, parse_policy(copy.deepcopy(doc.model_dump()))).direction == "unchanged"


# Fields of BASE a mutation may touch, with values either side of BASE's. Windows are left
# alone: their soundness holds over sequences, not single decisions (tested below).
MUTABLE: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("max_per_payout_sat", st.integers(0, 100_000)),
    ("velocity.0.max_amount_sat", st.integers(0, 40_000)),
    ("velocity.0.max_count", st.integers(0, 20)),
    ("velocity.0.scope", st.sampled_from(["wallet", "destination", "token"])),
    ("allowlist.required", st.booleans()),
    ("allowlist.on_missing", st.sampled_from(["deny", "require_approval"])),
    ("allowlist.cooling_off", st.sampled_from([0, 1800, 3600, 7200])),
    ("allowlist.trust_ramp.initial_max_sat", st.integers(1, 10_000)),
    ("allowlist.trust_ramp.doubling_period", st.sampled_from([*WINDOWS, 1800, 7200])),
    ("allowlist.denylist", st.lists(st.sampled_from(DESTS), unique=True)),
    ("approval_tiers.0.above_sat", st.integers(0, 99_999)),
    ("approval_tiers.0.m", st.integers(1, 3)),
    ("approval_tiers.1.m", st.integers(2, 5)),
]


# BASE with a velocity limit that leaves room for payouts, so that other rules get a say.
SOUND_BASE = {
    **BASE,
    "velocity": [{**VEL, "max_amount_sat": 20_000}],
    "allowlist": {
        **ALLOW,
        "required": False,
        "cooling_off": "1h",
        "trust_ramp": {"initial_max_sat": 5_000, "doubling_period": "1h"},
    },
}


SOUND_BASES = [
    SOUND_BASE,
    {**SOUND_BASE, "allowlist": {**SOUND_BASE["allowlist"], "required": True}},
]


@st.composite
def _mutation(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """One of SOUND_BASES, and a copy with one to three fields changed."""
    base = draw(st.sampled_from(SOUND_BASES))
    doc = policy_dict(**base)
    for index in draw(st.sets(st.integers(0, len(MUTABLE) - 1), min_size=1, max_size=3)):
        path, values = MUTABLE[index]
        *parents, leaf = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(leaf) if isinstance(target, list) else leaf] = draw(values)
    return base, doc


@settings(max_examples=1000, deadline=None)
@given(
    _mutation(),
    st.sampled_from(DESTS),
    st.integers(1, 1_500) | st.integers(1, 20_000) | st.integers(1, 120_000),
    st.sampled_from(TOKENS),
    st.data(),
)
def test_a_tightening_never_lets_through_what_the_old_policy_stopped(
    mutation: tuple[dict[str, Any], dict[str, Any]],
    destination: str,
    amount: int,
    token: str | None,
    data: st.DataObject,
) -> None:
    """If the ratchet says "tighten", every decision under the new policy is at least as
    strict as under the old one: never a better outcome, never fewer approvals."""
    base, mutated = mutation
    old = make_policy(**base)
    try:
        new = parse_policy(mutated)
    except PolicyError:
        assume(False)  # e.g. tier m no longer monotone
        raise
    assume(compare(old, new).direction == "tighten")
    snapshot = data.draw(snapshots(destination))
    request = PayoutRequest(WALLET, destination, amount, token)
    before, after = evaluate(request, snapshot, old, NOW), evaluate(request, snapshot, new, NOW)
    assert OUTCOME_ORDER[after.outcome] >= OUTCOME_ORDER[before.outcome], (
        before.to_dict(),
        after.to_dict(),
    )
    if before.required is not None and after.required is not None:
        assert after.required.m >= before.required.m
        assert after.required.group == before.required.group


SCOPES = ["wallet", "destination", "token"]
velocity_pairs = st.tuples(
    st.sampled_from([*WINDOWS, 120, 1800]),
    st.integers(0, 2_000),
    st.sampled_from(SCOPES),
    st.sampled_from([*WINDOWS, 120, 1800]),
    st.integers(0, 2_000),
    st.sampled_from(SCOPES),
)


@settings(max_examples=500, deadline=None)
@given(
    velocity_pairs,
    st.lists(
        st.tuples(
            st.integers(0, 120),
            st.integers(1, 1_000),
            st.sampled_from(DESTS[:2]),
            st.sampled_from(TOKENS[:2]),
        ),
        min_size=1,
        max_size=40,
    ),
)
@example(  # a per-destination limit does not bound the wallet's sum
    (3600, 1500, "wallet", 3600, 1000, "destination"),
    [(1, 1000, DESTS[0], None), (1, 1000, DESTS[1], None)],
)
def test_velocity_implication_holds_over_any_sequence(
    pair: tuple[int, int, str, int, int, str], stream: list[tuple[int, int, str, str | None]]
) -> None:
    """When velocity_implies(new, old), histories built under new never break old."""
    old_w, old_max, old_scope, new_w, new_max, new_scope = pair
    old = VelocityLimit(id="v", window=old_w, scope=old_scope, max_amount_sat=old_max)  # type: ignore[arg-type]
    new = VelocityLimit(id="v", window=new_w, scope=new_scope, max_amount_sat=new_max)  # type: ignore[arg-type]
    assume(velocity_implies(new, old))
    policy = make_policy(velocity=[new.model_dump()])
    accepted: list[HeldPayout] = []
    now = NOW
    for gap, amount, destination, token in stream:
        now += timedelta(seconds=gap)
        decision = evaluate(
            PayoutRequest(WALLET, destination, amount, token),
            HistorySnapshot(tuple(accepted)),
            policy,
            now,
        )
        if decision.outcome != "deny":
            accepted.append(HeldPayout(amount, destination, token, now))
    for last in accepted:
        inside = [
            p
            for p in accepted
            if last.created_at - timedelta(seconds=old_w) <= p.created_at <= last.created_at
            and (
                old_scope == "wallet"
                or (old_scope == "destination" and p.destination == last.destination)
                or (old_scope == "token" and p.token_id == last.token_id)
            )
        ]
        assert sum(p.amount_sat for p in inside) <= old_max
