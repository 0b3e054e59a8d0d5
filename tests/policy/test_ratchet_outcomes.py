"""The ratchet judged against the engine: whenever it says "tighten", the new policy decides
every payout at least as strictly as the old one, whatever the history.

"At least as strict": what was denied stays denied; what needed m approvals of a group needs
at least m of the SAME group (or is denied); only what was allowed may become anything.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from walletsvc.policy import (
    Decision,
    HistorySnapshot,
    PolicyDocument,
    PolicyError,
    compare,
    evaluate,
    load_policy_yaml,
    parse_policy,
)
from walletsvc.policy.engine import Required

from .factories import NOW, entry, history, make_policy, policy_dict, request
from .strategies import edited, payouts_under, policies
from .test_document import DEFAULT_YAML
from .test_ratchet import BASE, SOUND_BASES

DEFAULT = load_policy_yaml(DEFAULT_YAML.read_text())

# Real documents to edit, each with the scale of its amounts.
REAL: list[tuple[dict[str, Any], int]] = [
    (DEFAULT.model_dump(mode="json"), 200_000_000),
    (policy_dict(**BASE), 120_000),
    *((policy_dict(**base), 120_000) for base in SOUND_BASES),
]

PAYOUTS_PER_PAIR = 20
# One seed per pair of documents: the payouts come from random.Random(seed), so a failure
# names the seed that reproduces it and many payouts cost one draw.
SEEDS = st.integers(0, 2**32)


def no_looser(before: Decision, after: Decision) -> bool:
    if before.outcome == "deny":
        return after.outcome == "deny"
    if before.outcome == "allow" or after.outcome == "deny":
        return True
    return (
        after.outcome == "require_approval"
        and before.required is not None
        and after.required is not None
        and after.required.group == before.required.group
        and after.required.m >= before.required.m
    )


def check_tightenings(a: PolicyDocument, b: PolicyDocument, seed: int) -> None:
    """Check the property for whichever of a -> b and b -> a the ratchet calls tightening."""
    rnd = random.Random(seed)
    for old, new in ((a, b), (b, a)):
        if compare(old, new).direction != "tighten":
            continue
        event("a tightening checked")
        for _ in range(PAYOUTS_PER_PAIR):
            payout, snapshot = payouts_under(rnd, (old, new))
            before = evaluate(payout, snapshot, old, NOW)
            after = evaluate(payout, snapshot, new, NOW)
            assert no_looser(before, after), (
                compare(old, new).to_dict()["changes"],
                payout,
                snapshot,
                before.to_dict(),
                after.to_dict(),
            )


def parsed_or_reject(doc: dict[str, Any]) -> PolicyDocument:
    try:
        return parse_policy(doc)
    except PolicyError:
        assume(False)
        raise


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(REAL), st.data())
def test_edits_of_real_policies(real: tuple[dict[str, Any], int], data: st.DataObject) -> None:
    doc, scale = real
    new = parsed_or_reject(data.draw(edited(doc, scale)))
    check_tightenings(parse_policy(doc), new, data.draw(SEEDS))


@settings(max_examples=600, deadline=None)
@given(policies(), st.data())
def test_edits_of_drawn_policies(old: PolicyDocument, data: st.DataObject) -> None:
    new = parsed_or_reject(data.draw(edited(old.model_dump(mode="json"), 20_000)))
    check_tightenings(old, new, data.draw(SEEDS))


@settings(max_examples=300, deadline=None)
@given(policies(), policies(), SEEDS)
def test_pairs_of_drawn_policies(a: PolicyDocument, b: PolicyDocument, seed: int) -> None:
    check_tightenings(a, b, seed)


# --- Named regressions -----------------------------------------------------------------------

RAMPED = {
    "approval_tiers": [{"above_sat": 10_000_000, "group": "treasury", "m": 2}],
    "allowlist": {
        "required": False,
        "cooling_off": 0,
        "trust_ramp": {"initial_max_sat": 5_000_000, "doubling_period": "1d"},
    },
}


def _decide(policy: PolicyDocument, amount: int, snapshot: HistorySnapshot) -> Decision:
    return evaluate(request(amount), snapshot, policy, NOW)


def test_a_longer_cooling_off_that_switches_the_ramp_off_loosens() -> None:
    old = make_policy(**RAMPED)
    for cooling_off in ("1h", "3650d"):
        new = make_policy(
            **{**RAMPED, "allowlist": {**RAMPED["allowlist"], "cooling_off": cooling_off}}
        )
        # An entry approved 10 minutes ago, limited to 5,000,000 sat a day by the ramp:
        snapshot = history(allowlist_entry=entry(approved_ago=timedelta(minutes=10)))
        assert _decide(old, 9_000_000, snapshot).outcome == "deny"
        assert _decide(new, 9_000_000, snapshot).outcome == "allow"  # not usable, not required
        assessment = compare(old, new)
        assert assessment.direction == "loosen", assessment.to_dict()
        assert ("allowlist.cooling_off", "loosen") in {
            (c.path, c.direction) for c in assessment.changes
        }
    # Deleting the ramp, the same outcome, was and is a loosening.
    without = make_policy(**{**RAMPED, "allowlist": {"required": False, "cooling_off": 0}})
    assert compare(old, without).loosens


def test_a_longer_cooling_off_tightens_when_unusable_entries_are_denied() -> None:
    required = {**RAMPED, "allowlist": {**RAMPED["allowlist"], "required": True}}
    longer = {**required, "allowlist": {**required["allowlist"], "cooling_off": "1h"}}
    assert compare(make_policy(**required), make_policy(**longer)).direction == "tighten"


GROUPS_OLD = {
    "approval_tiers": [
        {"above_sat": 10_000, "group": "treasury", "m": 2},
        {"above_sat": 100_000, "group": "treasury", "m": 3},
    ],
    "allowlist": {
        "required": True,
        "on_missing": "require_approval",
        "approval": {"group": "security", "m": 3},
    },
}


def test_a_tier_that_hands_payouts_to_another_group_loosens() -> None:
    old = make_policy(**GROUPS_OLD)
    tiers = [
        {"above_sat": 0, "group": "ops", "m": 3},
        {"above_sat": 10_000, "group": "treasury", "m": 3},
        {"above_sat": 100_000, "group": "treasury", "m": 4},
    ]
    new = make_policy(**{**GROUPS_OLD, "approval_tiers": tiers})
    # Each requirement alone got stricter, but an unlisted address now needs 3 of ops.
    unlisted = history()
    before, after = _decide(old, 5_000, unlisted), _decide(new, 5_000, unlisted)
    assert before.required is not None and after.required is not None
    assert (before.required.group, after.required.group) == ("security", "ops")
    assessment = compare(old, new)
    assert assessment.direction == "loosen", assessment.to_dict()
    assert ("approval_tiers[>0]", "loosen") in {(c.path, c.direction) for c in assessment.changes}


def test_requiring_the_allowlist_with_another_group_loosens() -> None:
    tiers = GROUPS_OLD["approval_tiers"]
    optional = make_policy(
        approval_tiers=tiers,
        allowlist={
            "required": False,
            "on_missing": "require_approval",
            "approval": {"group": "security", "m": 3},
        },
    )
    required = make_policy(**GROUPS_OLD)
    # 50,000 sat to an unlisted address: 2 of treasury before, 3 of security after.
    assert _decide(optional, 50_000, history()).required == Required("treasury", 2)
    assert _decide(required, 50_000, history()).required == Required("security", 3)
    assessment = compare(optional, required)
    assert assessment.loosens
    assert ("allowlist.required", "loosen") in {(c.path, c.direction) for c in assessment.changes}
    # Adding an allowlist section with its own group does the same.
    assert compare(make_policy(approval_tiers=tiers), required).loosens
    # With the tiers' own group and a larger m, requiring the allowlist does tighten.
    same_group = {**GROUPS_OLD["allowlist"], "approval": {"group": "treasury", "m": 3}}
    assert (
        compare(
            make_policy(approval_tiers=tiers, allowlist={**same_group, "required": False}),
            make_policy(approval_tiers=tiers, allowlist=same_group),
        ).direction
        == "tighten"
    )


def test_the_ramp_is_compared_at_every_age() -> None:
    ramp = {"initial_max_sat": 1_000, "doubling_period": "1d"}
    old = make_policy(allowlist={"cooling_off": "1d", "trust_ramp": ramp})
    # Half the start, but doubling twice as fast: smaller at first, larger from day 3.
    faster = {"initial_max_sat": 500, "doubling_period": "12h"}
    new = make_policy(allowlist={"cooling_off": "1d", "trust_ramp": faster})
    assert compare(old, new).loosens
    # Shorter cooling-off with the same ramp: the allowance starts growing earlier.
    earlier = make_policy(allowlist={"cooling_off": "1h", "trust_ramp": ramp})
    assert compare(old, earlier).loosens


def test_requiring_the_default_policys_allowlist() -> None:
    doc = DEFAULT.model_dump(mode="json")
    doc["allowlist"]["required"] = True
    # Unlisted addresses then need the highest tier's quorum: 3 of treasury, never fewer.
    assert compare(DEFAULT, parse_policy(doc)).direction == "tighten"
    doc["allowlist"]["approval"] = {"group": "security", "m": 3}
    # With its own group, 20,000,000 sat moves from 2 of treasury to 3 of security.
    assert _decide(DEFAULT, 20_000_000, history()).required == Required("treasury", 2)
    assert _decide(parse_policy(doc), 20_000_000, history()).required == Required("security", 3)
    assert compare(DEFAULT, parse_policy(doc)).loosens
