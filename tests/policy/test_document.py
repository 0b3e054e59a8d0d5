"""Policy documents: validation with field paths, durations, canonical form, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from walletsvc.domain.errors import InvalidInput
from walletsvc.policy import (
    PolicyError,
    canonical_json,
    load_policy_yaml,
    parse_policy,
    policy_hash,
    policy_json_schema,
)
from walletsvc.policy.document import SCHEMA_PATH, format_duration, parse_duration

from .factories import make_policy, policy_dict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "policies" / "default.yaml"

VELOCITY = [
    {"id": "a", "window": "1h", "max_amount_sat": 100},
    {"id": "b", "window": "24h", "max_count": 5},
]


def test_minimal_document_has_documented_defaults() -> None:
    doc = make_policy()
    assert doc.version == 1
    assert doc.max_per_payout_sat is None
    assert doc.velocity == ()
    assert doc.approval_expiry == 24 * 3600
    assert doc.governance.policy_change_timelock == 48 * 3600
    assert doc.quorum_for("unfreeze").m == 2


def test_policy_error_is_invalid_input_with_code() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_dict(max_per_payout_sat=1.5))
    assert isinstance(info.value, InvalidInput)
    assert info.value.code == "invalid_policy"
    assert info.value.field == "max_per_payout_sat"


BAD_DOCUMENTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("float amount", {"max_per_payout_sat": 1.5}, "max_per_payout_sat"),
    ("integral float amount", {"max_per_payout_sat": 100.0}, "max_per_payout_sat"),
    ("string amount", {"max_per_payout_sat": "100"}, "max_per_payout_sat"),
    ("bool amount", {"max_per_payout_sat": True}, "max_per_payout_sat"),
    ("negative amount", {"max_per_payout_sat": -1}, "max_per_payout_sat"),
    ("above supply", {"max_per_payout_sat": 21_000_000 * 10**8 + 1}, "max_per_payout_sat"),
    (
        "bad window unit",
        {"velocity": [VELOCITY[0], {**VELOCITY[1], "window": "1x"}]},
        "velocity[1].window",
    ),
    ("zero window", {"velocity": [{**VELOCITY[0], "window": 0}]}, "velocity[0].window"),
    ("float window", {"velocity": [{**VELOCITY[0], "window": 1.5}]}, "velocity[0].window"),
    ("bad scope", {"velocity": [{**VELOCITY[0], "scope": "ip"}]}, "velocity[0].scope"),
    ("velocity without max", {"velocity": [{"id": "a", "window": "1h"}]}, "velocity[0]"),
    (
        "duplicate velocity id",
        {"velocity": [VELOCITY[0], {**VELOCITY[1], "id": "a"}]},
        "velocity[1].id",
    ),
    ("unknown velocity key", {"velocity": [{**VELOCITY[0], "limit": 3}]}, "velocity[0].limit"),
    ("string count", {"velocity": [{**VELOCITY[1], "max_count": "5"}]}, "velocity[0].max_count"),
    ("bad id", {"velocity": [{**VELOCITY[0], "id": "Has Space"}]}, "velocity[0].id"),
    ("unknown top key", {"max_per_payout": 5}, "max_per_payout"),
    ("version 2", {"version": 2}, "version"),
    ("string required", {"allowlist": {"required": "yes"}}, "allowlist.required"),
    ("bad on_missing", {"allowlist": {"on_missing": "allow"}}, "allowlist.on_missing"),
    ("bad cooling_off", {"allowlist": {"cooling_off": "soon"}}, "allowlist.cooling_off"),
    (
        "ramp zero initial",
        {"allowlist": {"trust_ramp": {"initial_max_sat": 0, "doubling_period": "1d"}}},
        "allowlist.trust_ramp.initial_max_sat",
    ),
    (
        "ramp missing period",
        {"allowlist": {"trust_ramp": {"initial_max_sat": 5}}},
        "allowlist.trust_ramp.doubling_period",
    ),
    (
        "denylist duplicate by case",
        {"allowlist": {"denylist": ["bcrt1qabc", "BCRT1QABC"]}},
        "allowlist.denylist[1]",
    ),
    ("denylist non-string", {"allowlist": {"denylist": [5]}}, "allowlist.denylist[0]"),
    (
        "on_missing approval without quorum",
        {"allowlist": {"required": True, "on_missing": "require_approval"}},
        "allowlist.approval",
    ),
    (
        "tier m zero",
        {"approval_tiers": [{"above_sat": 10, "group": "treasury", "m": 0}]},
        "approval_tiers[0].m",
    ),
    (
        "duplicate tier",
        {
            "approval_tiers": [
                {"above_sat": 10, "group": "treasury", "m": 2},
                {"above_sat": 10, "group": "treasury", "m": 3},
            ]
        },
        "approval_tiers[1].above_sat",
    ),
    (
        "tiers not monotone",
        {
            "approval_tiers": [
                {"above_sat": 100, "group": "treasury", "m": 2},
                {"above_sat": 10, "group": "treasury", "m": 3},
            ]
        },
        "approval_tiers[0].m",
    ),
    ("missing governance", {"governance": None}, "governance"),
    ("governance m string", {"governance.unfreeze.m": "2"}, "governance.unfreeze.m"),
    (
        "governance action missing",
        {"governance.key_rotation": None},
        "governance.key_rotation",
    ),
    (
        "bad timelock",
        {"governance.policy_change_timelock": -5},
        "governance.policy_change_timelock",
    ),
    ("expiry zero", {"approval_expiry": 0}, "approval_expiry"),
    (
        "hot target above ceiling",
        {"hot": {"ceiling_sat": 10, "target_sat": 20, "floor_sat": 0}},
        "hot.target_sat",
    ),
    (
        "hot floor above target",
        {"hot": {"ceiling_sat": 30, "target_sat": 20, "floor_sat": 25}},
        "hot.floor_sat",
    ),
    (
        "hot float",
        {"hot": {"ceiling_sat": 3.0, "target_sat": 2, "floor_sat": 1}},
        "hot.ceiling_sat",
    ),
    (
        "unknown risk kind",
        {"risk": {"rules": [{"id": "night", "kind": "odd_hours"}]}},
        "risk.rules[0].kind",
    ),
    (
        "risk param not scalar",
        {"risk": {"rules": [{"id": "night", "kind": "odd_hours", "params": {"h": [1]}}]}},
        "risk.rules[0].params.h",
    ),
    ("wallet name", {"wallet": "Not A Name"}, "wallet"),
]


def _apply(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with dotted keys replace (or, with None, delete) a nested value."""
    doc = policy_dict(**{k: v for k, v in overrides.items() if "." not in k})
    for key, value in overrides.items():
        if "." in key:
            *parents, leaf = key.split(".")
            target = doc
            for part in parents:
                target = target[part]
            if value is None:
                del target[leaf]
            else:
                target[leaf] = value
        elif value is None:
            del doc[key]
    return doc


@pytest.mark.parametrize(
    ("overrides", "path"),
    [(o, p) for _, o, p in BAD_DOCUMENTS],
    ids=[n for n, _, _ in BAD_DOCUMENTS],
)
def test_bad_document_names_the_bad_field(overrides: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_apply(overrides))
    assert info.value.field == path
    assert path in info.value.message


@pytest.mark.parametrize("obj", [None, [], "version: 1", 5])
def test_non_mapping_is_refused(obj: object) -> None:
    with pytest.raises(PolicyError):
        parse_policy(obj)


def test_yaml_with_path_error() -> None:
    text = """
version: 1
governance: {allowlist_add: {group: t, m: 1}, policy_change: {group: t, m: 1},
  unfreeze: {group: t, m: 1}, key_rotation: {group: t, m: 1},
  cold_destination_change: {group: t, m: 1}}
velocity:
  - {id: a, window: 1h, max_amount_sat: 100}
  - {id: b, window: 1.5h, max_amount_sat: 100}
"""
    with pytest.raises(PolicyError) as info:
        load_policy_yaml(text)
    assert info.value.field == "velocity[1].window"


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nversion: 1\n",  # PyYAML would silently keep the last one
        "version: [1\n",
        "",
        "- 1\n",
    ],
)
def test_bad_yaml_is_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        load_policy_yaml(text)


def test_duplicate_nested_key_is_refused() -> None:
    text = DEFAULT_YAML.read_text() + "\nmax_per_payout_sat: 1\n"
    with pytest.raises(PolicyError, match="duplicate key"):
        load_policy_yaml(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "h", "1.5h", "-1h", "1 h", "1H", " 1h", "1y"])
def test_bad_duration_strings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- Canonical form ---------------------------------------------------------------------------

YAML_A = """
# the pool's policy
version: 1
max_per_payout_sat: 50_000_000   # 0.5 BTC
velocity:
  - {id: hourly, window: 1h, max_amount_sat: 200_000_000}
  - {id: daily, window: 24h, max_amount_sat: 1_000_000_000}
allowlist:
  denylist: [bcrt1qaaa, bcrt1qbbb]
approval_tiers:
  - {above_sat: 10_000_000, group: treasury, m: 2}
  - {above_sat: 100_000_000, group: treasury, m: 3}
governance:
  allowlist_add: {group: treasury, m: 2}
  policy_change: {group: treasury, m: 2}
  unfreeze: {group: treasury, m: 2}
  key_rotation: {group: treasury, m: 2}
  cold_destination_change: {group: treasury, m: 2}
"""

# The same rules: other comments, key order, list order, duration and address spellings,
# defaults written out.
YAML_B = """
governance:
  cold_destination_change: {m: 2, group: treasury}
  key_rotation: {m: 2, group: treasury}
  unfreeze: {group: treasury, m: 2}
  policy_change: {group: treasury, m: 2}
  allowlist_add:
    m: 2
    group: treasury
  policy_change_timelock: 2d
approval_tiers:
  - {above_sat: 100000000, group: treasury, m: 3}
  - {above_sat: 10000000, group: treasury, m: 2}
allowlist: {denylist: [BCRT1QBBB, bcrt1qaaa], required: false}
velocity:
  - {window: 86400, max_amount_sat: 1000000000, id: daily, scope: wallet}
  - {id: hourly, window: 60m, max_amount_sat: 200000000}
max_per_payout_sat: 50000000
approval_expiry: 24h
version: 1
"""


def test_canonical_hash_ignores_formatting() -> None:
    a, b = load_policy_yaml(YAML_A), load_policy_yaml(YAML_B)
    assert canonical_json(a) == canonical_json(b)
    assert policy_hash(a) == policy_hash(b)


def test_canonical_json_shape() -> None:
    raw = canonical_json(load_policy_yaml(YAML_A))
    assert b" " not in raw and b"\n" not in raw
    data = json.loads(raw)
    assert list(data) == sorted(data)
    assert len(policy_hash(load_policy_yaml(YAML_A))) == 64


def test_hash_changes_with_content() -> None:
    a = load_policy_yaml(YAML_A)
    b = load_policy_yaml(YAML_A.replace("50_000_000", "50_000_001"))
    assert policy_hash(a) != policy_hash(b)


def test_canonical_json_reparses_to_the_same_document() -> None:
    doc = load_policy_yaml(DEFAULT_YAML.read_text())
    again = parse_policy(json.loads(canonical_json(doc)))
    assert policy_hash(again) == policy_hash(doc)


# --- Schema ---------------------------------------------------------------------------------


def test_schema_file_matches_the_model() -> None:
    # Regenerate with: .venv/bin/python -m walletsvc.policy.document
    assert json.loads(SCHEMA_PATH.read_text()) == policy_json_schema()


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(policy_json_schema())


def test_default_policy_loads_and_matches_the_schema() -> None:
    text = DEFAULT_YAML.read_text()
    doc = load_policy_yaml(text)
    jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA_PATH.read_text()))
    assert doc.max_per_payout_sat == 50_000_000
    assert doc.allowlist is not None and not doc.allowlist.required
    assert [(t.above_sat, t.m) for t in doc.approval_tiers] == [(10_000_000, 2), (100_000_000, 3)]
    assert doc.hot is not None and doc.hot.floor_sat <= doc.hot.target_sat <= doc.hot.ceiling_sat


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        (o, p)
        for n, o, p in BAD_DOCUMENTS
        # Cross-field checks (duplicates, orderings, known kinds) live in the model only.
        if n
        not in {
            "velocity without max",
            "duplicate velocity id",
            "denylist duplicate by case",
            "on_missing approval without quorum",
            "duplicate tier",
            "tiers not monotone",
            "hot target above ceiling",
            "hot floor above target",
            "unknown risk kind",
            # JSON Schema counts 100.0 as an integer; the model does not.
            "integral float amount",
            "hot float",
        }
    ],
)
def test_schema_refuses_what_the_model_refuses(overrides: dict[str, Any], path: str) -> None:
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    assert not validator.is_valid(_apply(overrides)), path
