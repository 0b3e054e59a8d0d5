"""Stream risk rules as pure functions: each fires on its evidence and not on normal traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.governance_helpers import default_document
from walletsvc.policy.document import PolicyError, RiskRule, parse_policy
from walletsvc.policy.engine import HistorySnapshot, PayoutRequest, evaluate
from walletsvc.policy.risk import (
    ForeignSpend,
    Payment,
    RequestRecord,
    RequestSnapshot,
    duplicate_payments,
    evaluate_requests,
    foreign_spends,
    stream_rules,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def policy(*rules: dict[str, Any]) -> Any:
    return parse_policy(default_document(risk={"rules": list(rules)}))


def rec(
    n: int,
    *,
    who: str = "token:engine",
    outcome: str = "allow",
    amount: int = 100_000,
    dest: str = "dest-a",
    seconds: float = 0,
    paid_before: bool = True,
) -> RequestRecord:
    return RequestRecord(
        ref=f"w{n}",
        at=T0 + timedelta(seconds=seconds if seconds else n),
        who=who,
        wallet="pool-hot",
        destination=dest,
        amount_sat=amount,
        outcome=outcome,
        holds=outcome != "deny",
        paid_before=paid_before,
    )


def fired(doc: Any, records: list[RequestRecord]) -> list[str]:
    rules = stream_rules(
        doc, ("denied_burst", "request_rate", "velocity_fraction", "new_destination_large")
    )
    found = evaluate_requests(rules, RequestSnapshot(tuple(records)), doc)
    return [f.rule_id for f in found]


BURST = {
    "id": "burst",
    "kind": "denied_burst",
    "action": "freeze",
    "params": {"count": 5, "window": "1m"},
}
RATE = {
    "id": "rate",
    "kind": "request_rate",
    "action": "alert",
    "params": {"max_count": 10, "window": "1m"},
}
VELO = {
    "id": "velo",
    "kind": "velocity_fraction",
    "action": "alert",
    "params": {"fraction_pct": 80},
}
NEWDEST = {
    "id": "newdest",
    "kind": "new_destination_large",
    "action": "freeze",
    "params": {"min_amount_sat": 10_000_000},
}


def test_denied_burst_fires_once_on_the_crossing() -> None:
    doc = policy(BURST)
    denials = [rec(i, outcome="deny") for i in range(7)]
    assert fired(doc, denials) == ["burst"]  # the 5th denial crosses; 6 and 7 do not re-fire
    # Normal traffic: denials spread out, or from different tokens, or allowed requests.
    spread = [rec(i, outcome="deny", seconds=i * 30) for i in range(10)]
    assert fired(doc, spread) == []
    mixed = [rec(i, outcome="deny", who=f"token:{i}") for i in range(10)]
    assert fired(doc, mixed) == []
    assert fired(doc, [rec(i) for i in range(20)]) == []


def test_request_rate_fires_above_the_count() -> None:
    doc = policy(RATE)
    assert fired(doc, [rec(i) for i in range(10)]) == []
    assert fired(doc, [rec(i) for i in range(11)]) == ["rate"]
    assert fired(doc, [rec(i, seconds=i * 7) for i in range(30)]) == []  # 8-9 a minute


def test_velocity_fraction_fires_when_a_request_crosses_the_mark() -> None:
    # The default policy's wallet-1h limit is 2 BTC: 80% is 1.6 BTC.
    doc = policy(VELO)
    below = [rec(i, amount=10_000_000, dest=f"d{i}") for i in range(15)]  # 1.5 BTC
    assert fired(doc, below) == []
    crossing = [*below, rec(20, amount=20_000_000, dest="d20")]  # 1.7 BTC
    found = evaluate_requests(
        stream_rules(doc, ("velocity_fraction",)), RequestSnapshot(tuple(crossing)), doc
    )
    # wallet-1h and token-1h (one token asked for all of it) both have 2 BTC caps.
    assert sorted(f.evidence["velocity"] for f in found) == ["token-1h", "wallet-1h"]
    assert {f.evidence["withdrawal"] for f in found} == {"w20"}


def test_new_destination_large() -> None:
    doc = policy(NEWDEST)
    assert fired(doc, [rec(1, amount=20_000_000, paid_before=False)]) == ["newdest"]
    assert fired(doc, [rec(1, amount=20_000_000, paid_before=True)]) == []
    assert fired(doc, [rec(1, amount=9_999_999, paid_before=False)]) == []
    assert fired(doc, [rec(1, amount=20_000_000, paid_before=False, outcome="deny")]) == []


def test_chain_rules() -> None:
    rule = RiskRule(id="dup", kind="duplicate_payment", action="freeze", params={"window": "1h"})
    a = Payment("t1", 0, "0014aa", 50_000, "pool-hot", T0)
    b = Payment("t2", 0, "0014aa", 50_000, "pool-hot", T0 + timedelta(minutes=30))
    assert len(duplicate_payments(rule, [b], [a])) == 1
    other_amount = Payment("t2", 0, "0014aa", 50_001, "pool-hot", T0)
    other_script = Payment("t2", 0, "0014bb", 50_000, "pool-hot", T0)
    late = Payment("t3", 0, "0014aa", 50_000, "pool-hot", T0 + timedelta(hours=2))
    assert duplicate_payments(rule, [other_amount, other_script], [a]) == []
    assert duplicate_payments(rule, [late], [a]) == []
    builtin = stream_rules(policy(), ("foreign_spend",))
    assert [r.action for r in builtin] == ["freeze"]
    found = foreign_spends(builtin[0], [ForeignSpend("tx9", "c:0", 5, "pool-hot", 7)])
    assert found[0].evidence["outpoints"] == ["c:0"]
    assert foreign_spends(builtin[0], []) == []


def test_engine_skips_stream_rules_instead_of_denying() -> None:
    doc = policy(BURST, RATE, VELO, NEWDEST)
    decision = evaluate(
        PayoutRequest("pool-hot", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", 50_000),
        HistorySnapshot(),
        doc,
        T0,
    )
    assert decision.outcome == "allow"
    assert {r.rule: r.result for r in decision.rules}["risk.burst"] == "skip"


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({**BURST, "params": {"count": 5}}, "risk.rules[0].params.window"),
        ({**BURST, "params": {"count": 0, "window": "1m"}}, "risk.rules[0].params.count"),
        ({**BURST, "params": {"count": 5, "window": "soon"}}, "risk.rules[0].params.window"),
        ({**BURST, "action": "deny"}, "risk.rules[0].action"),
        ({**VELO, "params": {"fraction_pct": 150}}, "risk.rules[0].params.fraction_pct"),
        ({"id": "s", "kind": "signer_failure", "action": "alert"}, "risk.rules[0].action"),
        ({**RATE, "params": {"max_count": 5, "window": "1m", "x": 1}}, "risk.rules[0].params.x"),
    ],
)
def test_bad_risk_rules_are_refused(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(rule)
    assert info.value.field == field
