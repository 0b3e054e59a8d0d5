"""The policy's ``shield`` section: the theft shield's fee budget."""

from __future__ import annotations

from typing import Any

import pytest

from walletsvc.incident.shield import fee_budget
from walletsvc.policy import PolicyError, compare, parse_policy
from walletsvc.policy.document import canonical_dict, policy_hash

from .factories import make_policy, policy_dict


def test_without_a_section_half_of_the_stolen_value_may_go_to_fees() -> None:
    doc = make_policy()
    assert doc.shield is None
    assert fee_budget(doc.shield, 5_000_000_000) == 2_500_000_000


def test_a_document_without_the_section_keeps_its_digest() -> None:
    # Policies approved before the section existed must verify as they were approved.
    assert "shield" not in canonical_dict(make_policy())
    assert policy_hash(make_policy()) != policy_hash(make_policy(shield={}))


@pytest.mark.parametrize(
    ("shield", "budget"),
    [
        ({"max_fee_percent": 10}, 500_000_000),
        ({"max_fee_percent": 100}, 5_000_000_000),
        # Everything but a standard (non-dust) output to cold storage.
        ({"everything_to_fees": True}, 5_000_000_000 - 546),
        ({"everything_to_fees": True, "max_fee_percent": 100}, 5_000_000_000 - 546),
    ],
)
def test_budget(shield: dict[str, Any], budget: int) -> None:
    assert fee_budget(make_policy(shield=shield).shield, 5_000_000_000) == budget


@pytest.mark.parametrize(
    ("shield", "field"),
    [
        ({"max_fee_percent": 0}, "shield.max_fee_percent"),
        ({"max_fee_percent": 101}, "shield.max_fee_percent"),
        ({"max_fee_percent": 0.5}, "shield.max_fee_percent"),
        ({"max_fee_percent": "50"}, "shield.max_fee_percent"),
        ({"everything_to_fees": "yes"}, "shield.everything_to_fees"),
        ({"everything_to_fees": True, "max_fee_percent": 50}, "shield.max_fee_percent"),
        ({"max_fee_fraction": 0.5}, "shield.max_fee_fraction"),
    ],
)
def test_bad_shield_sections_name_the_field(shield: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_dict(shield=shield))
    assert info.value.field == field, info.value.message


def test_a_stored_document_parses_again() -> None:
    doc = make_policy(shield={"everything_to_fees": True})
    assert parse_policy(doc.model_dump(mode="json")) == doc


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, {"max_fee_percent": 10}),
        ({"max_fee_percent": 10}, {"max_fee_percent": 90}),
        ({"max_fee_percent": 90}, {"max_fee_percent": 10}),
        ({"max_fee_percent": 50}, {"everything_to_fees": True}),
        ({"everything_to_fees": True}, None),
    ],
)
def test_any_change_of_the_budget_loosens(
    old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    before = make_policy(**({"shield": old} if old is not None else {}))
    after = make_policy(**({"shield": new} if new is not None else {}))
    assessment = compare(before, after)
    assert assessment.direction == "loosen"
    assert [c.path for c in assessment.changes] == ["shield"]
