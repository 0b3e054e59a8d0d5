"""Policy documents: the declarative rules that decide whether money may leave a wallet.

A document is YAML (format in docs/policy.md, JSON Schema in schema.json next to this file),
parsed into frozen pydantic models. Everything a bad document can get wrong is refused here,
with a ``PolicyError`` naming the dotted/indexed path of the offending field
(``velocity[1].window``), so that the engine and the ratchet only ever see valid documents.

Amounts are strict integer satoshis (1.5 and "100" are refused: a float or a string already lost
or invented precision upstream). Durations are strings such as "15m", "24h", "7d", "1h30m" or
integer seconds; they are held as integer seconds, so ``window: 1h`` and ``window: 3600`` are the
same document and hash the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from walletsvc.domain import canonical
from walletsvc.domain.errors import InvalidInput
from walletsvc.domain.money import DUST_LIMIT_SAT, MAX_MONEY
from walletsvc.domain.network import SEGWIT_HRPS

SCHEMA_PATH = Path(__file__).with_name("schema.json")


class PolicyError(InvalidInput):
    """A policy document is refused; ``field`` is the path of the bad field, if one is to blame."""

    code = "invalid_policy"


# --- Durations -----------------------------------------------------------------------------

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^(?:[0-9]+[smhdw])+$")
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhdw])")
# Longer than any sane window; keeps timedelta arithmetic far from overflow.
MAX_DURATION_SECONDS = 3650 * 86400


def parse_duration(value: object) -> object:
    """Turn "1h", "1h30m", "7d" or integer seconds into integer seconds.

    Anything else is passed through unchanged for the strict int check to refuse, so that the
    error message and path come from pydantic like every other error.
    """
    if isinstance(value, str):
        text = value
        if not _DURATION_RE.fullmatch(text):
            raise ValueError(
                f"duration {value!r} is not like '15m', '24h', '7d' or integer seconds"
            )
        return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(text))
    return value


def format_duration(seconds: int) -> str:
    """The shortest exact string for ``seconds`` ("86400" -> "1d", "5400" -> "1h30m")."""
    if seconds == 0:
        return "0s"
    parts: list[str] = []
    rest = seconds
    for unit in ("d", "h", "m", "s"):
        n, rest = divmod(rest, _UNIT_SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


_DURATION_JSON_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "pattern": _DURATION_RE.pattern},
        {"type": "integer", "minimum": 0, "maximum": MAX_DURATION_SECONDS},
    ],
    "description": "A duration: '15m', '24h', '7d', '1h30m' or integer seconds.",
}

# Seconds; 0 allowed (e.g. no cooling-off). Positive durations use PositiveDuration.
Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    Strict(),
    Field(ge=0, le=MAX_DURATION_SECONDS),
    WithJsonSchema(_DURATION_JSON_SCHEMA),
]
PositiveDuration = Annotated[
    int,
    BeforeValidator(parse_duration),
    Strict(),
    Field(ge=1, le=MAX_DURATION_SECONDS),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "pattern": _DURATION_RE.pattern},
                {"type": "integer", "minimum": 1, "maximum": MAX_DURATION_SECONDS},
            ],
            "description": "A positive duration: '15m', '24h', '7d', '1h30m' or seconds.",
        }
    ),
]

# --- Scalars --------------------------------------------------------------------------------

# A limit in satoshis. 0 is a valid (blocking) limit; lower is always stricter.
Sat = Annotated[int, Strict(), Field(ge=0, le=MAX_MONEY)]
PositiveSat = Annotated[int, Strict(), Field(ge=1, le=MAX_MONEY)]
Count = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
Approvals = Annotated[int, Strict(), Field(ge=1, le=100)]
Name = Annotated[str, Strict(), Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Address = Annotated[str, Strict(), Field(min_length=1, max_length=128)]

Scope = Literal["wallet", "destination", "token"]
OnMissing = Literal["deny", "require_approval"]
GovernedAction = Literal[
    "allowlist_add", "policy_change", "unfreeze", "key_rotation", "cold_destination_change"
]
GOVERNED_ACTIONS: tuple[GovernedAction, ...] = (
    "allowlist_add",
    "policy_change",
    "unfreeze",
    "key_rotation",
    "cold_destination_change",
)

# Risk rule kinds this build knows: the stream rules of walletsvc.policy.risk (evaluated over
# the request stream, the signer and the chain; the per-request engine skips them). A document
# naming a kind this build does not know is refused rather than silently ignored.
# Kinds evaluated over the request stream (walletsvc.incident.risk, each background pass).
REQUEST_KINDS = frozenset(
    {"denied_burst", "velocity_fraction", "new_destination_large", "request_rate"}
)
# Kinds evaluated on signer failures and on each scanned block.
SIGNER_KINDS = frozenset({"signer_failure"})
CHAIN_KINDS = frozenset({"duplicate_payment", "foreign_spend"})
STREAM_KINDS = REQUEST_KINDS | SIGNER_KINDS | CHAIN_KINDS
# These always freeze, configured or not: a signer refusing its own work or our coins moved by
# a transaction we never signed means the keys or the database are no longer ours alone.
ALWAYS_FREEZE = frozenset({"signer_failure", "foreign_spend"})
KNOWN_RISK_KINDS: frozenset[str] = STREAM_KINDS

# What a rule does when it fires: stream rules alert or freeze; deny and require_approval are
# kept for per-request kinds.
RiskAction = Literal["deny", "require_approval", "alert", "freeze"]

_BECH32_PREFIXES = tuple(hrp + "1" for hrp in SEGWIT_HRPS)


def normalize_address(address: str) -> str:
    """Compare addresses in one form: bech32 is case-insensitive, so it is lower-cased.

    Without this, ``BC1Q...`` would slip past a denylist entry written ``bc1q...``. Base58
    addresses are case-sensitive and are kept as they are.
    """
    text = address.strip()
    if text.lower().startswith(_BECH32_PREFIXES):
        return text.lower()
    return text


# --- Models ---------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Quorum(_Model):
    """m distinct approvals from members of ``group``."""

    group: Name
    m: Approvals


class VelocityLimit(_Model):
    """At most ``max_amount_sat`` / ``max_count`` payouts within any rolling ``window``.

    The scope says which held payouts count: all of the wallet's, those to the same destination,
    or those made with the same API token. The new request itself counts too.
    """

    id: Name
    window: PositiveDuration
    scope: Scope = "wallet"
    max_amount_sat: Sat | None = None
    max_count: Count | None = None


class TrustRamp(_Model):
    """A new allowlist entry may receive at most ``initial_max_sat`` per ``doubling_period``;
    the allowance doubles with each full period of the entry's age (after its cooling-off)."""

    initial_max_sat: PositiveSat
    doubling_period: PositiveDuration


class Allowlist(_Model):
    required: Annotated[bool, Strict()] = False
    on_missing: OnMissing = "deny"
    cooling_off: Duration = 86400
    trust_ramp: TrustRamp | None = None
    # Who approves a payout to an address not on the list when on_missing is
    # require_approval; absent, the highest approval tier's quorum is used.
    approval: Quorum | None = None
    denylist: tuple[Address, ...] = ()


class ApprovalTier(_Model):
    """Payouts of more than ``above_sat`` need ``m`` approvals from ``group``."""

    above_sat: Sat
    group: Name
    m: Approvals


class Governance(_Model):
    allowlist_add: Quorum
    policy_change: Quorum
    unfreeze: Quorum
    key_rotation: Quorum
    cold_destination_change: Quorum
    policy_change_timelock: Duration = 48 * 3600


class HotThresholds(_Model):
    """Hot balance thresholds: sweep to cold above ``ceiling_sat`` down to ``target_sat``;
    alert (refill from cold by hand) below ``floor_sat``. floor <= target <= ceiling."""

    ceiling_sat: Sat
    target_sat: Sat
    floor_sat: Sat


DEFAULT_SHIELD_FEE_PERCENT = 50


class Shield(_Model):
    """The theft shield's budget (walletsvc.incident.shield): its answers to a theft seen in
    the mempool may pay at most ``max_fee_percent`` of the stolen coins' value in fees, or,
    with ``everything_to_fees``, all of it but a dust-sized output to cold storage (better
    the miners than the thief). A whole percentage, not a fraction: no float near money.
    Unset, ``max_fee_percent`` is 50 (100 with ``everything_to_fees``)."""

    max_fee_percent: Annotated[int, Strict(), Field(ge=1, le=100)] | None = None
    everything_to_fees: Annotated[bool, Strict()] = False

    @property
    def fee_percent(self) -> int:
        if self.everything_to_fees:
            return 100
        return DEFAULT_SHIELD_FEE_PERCENT if self.max_fee_percent is None else self.max_fee_percent

    def fee_budget(self, stolen_sat: int) -> int:
        """The most the shield's answers may pay in fees for coins worth ``stolen_sat``
        (one rule for the service's shield and the signer's own check of its answers)."""
        if self.everything_to_fees:
            return max(0, stolen_sat - DUST_LIMIT_SAT)  # cold still gets a standard output
        return stolen_sat * self.fee_percent // 100


def _risk_param(value: object) -> object:
    # A plain scalar check rather than a pydantic union: a union's errors carry the member
    # tags ('int', 'str') in their path, and the path must name the user's field only.
    if isinstance(value, bool | int | str):
        return value
    raise ValueError(f"a risk parameter must be an integer, a string or a boolean, not {value!r}")


RiskParam = Annotated[
    Any,
    AfterValidator(_risk_param),
    WithJsonSchema({"type": ["integer", "string", "boolean"]}),
]


class RiskRule(_Model):
    """A risk rule: an id, a kind (walletsvc.policy.risk), what happens when it fires
    (``alert`` or ``freeze`` for stream rules), and typed scalar parameters."""

    id: Name
    kind: Name
    action: RiskAction = "deny"
    approval: Quorum | None = None
    params: dict[Annotated[str, Strict()], RiskParam] = Field(default_factory=dict)


class Risk(_Model):
    rules: tuple[RiskRule, ...] = ()


class PolicyDocument(_Model):
    """One policy document (``version: 1``), for one wallet or, with no ``wallet``, the default."""

    version: Literal[1]
    wallet: Name | None = None
    max_per_payout_sat: Sat | None = None
    velocity: tuple[VelocityLimit, ...] = ()
    allowlist: Allowlist | None = None
    approval_tiers: tuple[ApprovalTier, ...] = ()
    approval_expiry: PositiveDuration = 86400
    governance: Governance
    hot: HotThresholds | None = None
    risk: Risk | None = None
    # Absent: the shield runs with Shield()'s defaults.
    shield: Shield | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> PolicyDocument:
        # PolicyError is not a ValueError, so pydantic lets it through unwrapped, with the
        # exact path we give it (pydantic would only say "the whole document").
        try:
            _check_velocity(self.velocity)
            _check_tiers(self.approval_tiers)
            _check_allowlist(self.allowlist, self.approval_tiers)
            _check_hot(self.hot)
            _check_risk(self.risk)
            _check_shield(self.shield)
        except PolicyError as exc:
            # Same message shape as the structural errors: "path: what is wrong".
            raise PolicyError(f"{exc.field}: {exc.message}", field=exc.field) from None
        return self

    # Conveniences for the engine and the caller.
    @property
    def approval_expiry_delta(self) -> timedelta:
        return timedelta(seconds=self.approval_expiry)

    @property
    def policy_change_timelock_delta(self) -> timedelta:
        return timedelta(seconds=self.governance.policy_change_timelock)

    def quorum_for(self, action: GovernedAction) -> Quorum:
        """The quorum that approves a governed action (allowlist_add, policy_change, ...)."""
        if action not in GOVERNED_ACTIONS:
            raise PolicyError(f"unknown governed action {action!r}", field="governance")
        quorum: Quorum = getattr(self.governance, action)
        return quorum


def _check_velocity(limits: tuple[VelocityLimit, ...]) -> None:
    seen: set[str] = set()
    for i, limit in enumerate(limits):
        if limit.id in seen:
            raise PolicyError(f"duplicate velocity id {limit.id!r}", field=f"velocity[{i}].id")
        seen.add(limit.id)
        if limit.max_amount_sat is None and limit.max_count is None:
            raise PolicyError(
                "a velocity limit needs max_amount_sat, max_count or both",
                field=f"velocity[{i}]",
            )


def _check_tiers(tiers: tuple[ApprovalTier, ...]) -> None:
    seen: set[int] = set()
    for i, tier in enumerate(tiers):
        if tier.above_sat in seen:
            raise PolicyError(
                f"two approval tiers above {tier.above_sat} sat",
                field=f"approval_tiers[{i}].above_sat",
            )
        seen.add(tier.above_sat)
    # More money never needs fewer approvals: a tier above a larger amount must not ask for
    # fewer than a tier above a smaller one (otherwise splitting the other way would pay).
    for i, tier in enumerate(tiers):
        for other in tiers:
            if other.above_sat < tier.above_sat and other.m > tier.m:
                raise PolicyError(
                    f"tier above {tier.above_sat} sat asks for {tier.m} approvals, fewer than "
                    f"the {other.m} of the tier above {other.above_sat} sat",
                    field=f"approval_tiers[{i}].m",
                )


def _check_allowlist(allowlist: Allowlist | None, tiers: tuple[ApprovalTier, ...]) -> None:
    if allowlist is None:
        return
    needs_quorum = allowlist.required and allowlist.on_missing == "require_approval"
    if needs_quorum and allowlist.approval is None and not tiers:
        raise PolicyError(
            "on_missing: require_approval needs allowlist.approval or an approval tier",
            field="allowlist.approval",
        )
    seen: set[str] = set()
    for i, address in enumerate(allowlist.denylist):
        norm = normalize_address(address)
        if norm in seen:
            raise PolicyError(
                f"{address} is on the denylist twice", field=f"allowlist.denylist[{i}]"
            )
        seen.add(norm)


def _check_shield(shield: Shield | None) -> None:
    if shield is None or not shield.everything_to_fees:
        return
    if shield.max_fee_percent not in (None, 100):
        raise PolicyError(
            "shield.everything_to_fees spends up to 100% in fees; max_fee_percent says "
            f"{shield.max_fee_percent}: remove one of the two",
            field="shield.max_fee_percent",
        )


def _check_hot(hot: HotThresholds | None) -> None:
    if hot is None:
        return
    if hot.target_sat > hot.ceiling_sat:
        raise PolicyError("hot.target_sat is above hot.ceiling_sat", field="hot.target_sat")
    if hot.floor_sat > hot.target_sat:
        raise PolicyError("hot.floor_sat is above hot.target_sat", field="hot.floor_sat")


def _check_risk(risk: Risk | None) -> None:
    if risk is None:
        return
    seen: set[str] = set()
    for i, rule in enumerate(risk.rules):
        if rule.id in seen:
            raise PolicyError(f"duplicate risk rule id {rule.id!r}", field=f"risk.rules[{i}].id")
        seen.add(rule.id)
        if rule.kind not in KNOWN_RISK_KINDS:
            known = ", ".join(sorted(KNOWN_RISK_KINDS)) or "none yet"
            raise PolicyError(
                f"unknown risk rule kind {rule.kind!r} (this build knows: {known})",
                field=f"risk.rules[{i}].kind",
            )
        problem = check_risk_params(rule)
        if problem is not None:
            where, _, what = problem.partition(": ")
            raise PolicyError(what, field=f"risk.rules[{i}].{where}")


# kind -> {param: type}; every listed param is required.
RISK_PARAMS: dict[str, dict[str, str]] = {
    "denied_burst": {"count": "count", "window": "duration"},
    "request_rate": {"max_count": "count", "window": "duration"},
    "velocity_fraction": {"fraction_pct": "percent"},
    "new_destination_large": {"min_amount_sat": "count"},
    "duplicate_payment": {"window": "duration"},
    "signer_failure": {},
    "foreign_spend": {},
}


def check_risk_params(rule: RiskRule) -> str | None:
    """Why ``rule``'s params are unusable (a message naming the param), or None if fine."""
    spec = RISK_PARAMS.get(rule.kind, {})
    for name in rule.params:
        if name not in spec:
            return f"params.{name}: not a parameter of {rule.kind}"
    for name, kind in spec.items():
        if name not in rule.params:
            return f"params.{name}: required for {rule.kind}"
        value = rule.params[name]
        if kind == "duration":
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                return f"params.{name}: {exc}"
            if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
                return f"params.{name}: a positive duration is required"
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"params.{name}: a positive integer is required"
        elif kind == "percent" and value > 100:
            return f"params.{name}: a percentage is at most 100"
    if rule.kind in STREAM_KINDS and rule.action not in ("alert", "freeze"):
        return f"action: {rule.kind} rules alert or freeze"
    if rule.kind in ALWAYS_FREEZE and rule.action != "freeze":
        return f"action: {rule.kind} always freezes"
    return None


# --- Parsing --------------------------------------------------------------------------------


def format_loc(loc: Iterable[str | int]) -> str:
    """('velocity', 1, 'window') -> 'velocity[1].window'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_policy(obj: object) -> PolicyDocument:
    """Validate a parsed document (a mapping, as from YAML or JSON) or raise PolicyError."""
    if not isinstance(obj, Mapping):
        raise PolicyError("a policy document must be a mapping", field=None)
    try:
        return PolicyDocument.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        path = format_loc(first["loc"]) or None
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PolicyError(f"{path or 'document'}: {first['msg']}{more}", field=path) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys.

    PyYAML keeps the last of two equal keys without a word; in a document that limits money, a
    second ``max_per_payout_sat`` further down must be an error, not a silent override.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_policy_yaml(text: str) -> PolicyDocument:
    """Parse and validate a YAML policy document or raise PolicyError."""
    try:
        obj = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}", field=None) from None
    return parse_policy(obj)


# --- Canonical form -------------------------------------------------------------------------


def canonical_dict(doc: PolicyDocument) -> dict[str, Any]:
    """The document as plain JSON data, with defaults filled in and sets put in order.

    Velocity limits are keyed by id, tiers by amount and the denylist is a set, so their order
    in the YAML carries no meaning and is normalised away; so are comments, key order, and
    the spelling of durations ("24h" == 86400) and of bech32 addresses (case).
    """
    data = doc.model_dump(mode="json")
    data["velocity"] = sorted(data["velocity"], key=lambda v: v["id"])
    data["approval_tiers"] = sorted(data["approval_tiers"], key=lambda t: t["above_sat"])
    if data["allowlist"] is not None:
        data["allowlist"]["denylist"] = sorted(
            normalize_address(a) for a in data["allowlist"]["denylist"]
        )
    if data["risk"] is not None:
        data["risk"]["rules"] = sorted(data["risk"]["rules"], key=lambda r: r["id"])
    if data["shield"] is None:
        # Documents written before the section existed keep the digest they were approved at.
        del data["shield"]
    return data


def canonical_json(doc: PolicyDocument) -> bytes:
    """Sorted keys, no whitespace, ASCII only: the bytes that are hashed and approved."""
    return canonical.canonical_json(canonical_dict(doc))


def policy_hash(doc: PolicyDocument) -> str:
    """SHA-256 hex of the canonical JSON: the policy revision recorded with each decision."""
    return canonical.content_digest(canonical_dict(doc))


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document, as generated from the models.

    schema.json holds the same; ``python -m walletsvc.policy.document`` rewrites it, and a test
    keeps the two equal.
    """
    schema = PolicyDocument.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://walletsvc.invalid/schemas/policy-v1.json"
    return schema


def render_schema() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
