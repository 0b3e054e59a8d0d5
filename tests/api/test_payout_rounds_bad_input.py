"""Bad payout rounds: a 4xx naming the field with the payout's index (``payouts[3].amount_sat``),
the one error shape, and nothing written; the same key then still works."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from bip_utils import SegwitBech32Encoder

from tests.conftest import WALLET, SharedApp, auth
from tests.helpers import count_rows, external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, IdempotencyKey, PayoutRound, Withdrawal
from walletsvc.payouts.rounds import MAX_ROUND_PAYOUTS

_HASH = hashlib.new("ripemd160", hashlib.sha256(b"bad round miner").digest()).digest()
MAINNET_BECH32 = str(SegwitBech32Encoder.Encode("bc", 0, _HASH))
_DROP = object()


def payouts(n: int = 5, tag: str = "bad round miner", **at: dict[str, Any]) -> list[dict[str, Any]]:
    """``n`` good payouts; ``at={"3": {...}}`` overrides (or with _DROP removes) keys of one."""
    made = []
    for i in range(n):
        payout: dict[str, Any] = {
            "destination": external_destination(f"{tag} {i}")[0],
            "amount_sat": 10_000,
        }
        payout.update(at.get(str(i), {}))
        made.append({k: v for k, v in payout.items() if v is not _DROP})
    return made


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"wallet": WALLET, "payouts": payouts()}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    field: str | None
    json: Any
    code: str | None = None
    key: str | None = "auto"


CASES = [
    Case(
        "float amount",
        422,
        "payouts[3].amount_sat",
        body(payouts=payouts(**{"3": {"amount_sat": 1.5}})),
        code="invalid_amount",
    ),
    Case(
        "string amount",
        422,
        "payouts[1].amount_sat",
        body(payouts=payouts(**{"1": {"amount_sat": "10000"}})),
        code="invalid_amount",
    ),
    Case(
        "dust amount",
        422,
        "payouts[2].amount_sat",
        body(payouts=payouts(**{"2": {"amount_sat": 545}})),
        code="invalid_amount",
    ),
    Case(
        "zero amount",
        422,
        "payouts[4].amount_sat",
        body(payouts=payouts(**{"4": {"amount_sat": 0}})),
        code="invalid_amount",
    ),
    Case(
        "mainnet address",
        422,
        "payouts[1].destination",
        body(payouts=payouts(**{"1": {"destination": MAINNET_BECH32}})),
        code="invalid_address",
    ),
    Case(
        "garbage address",
        422,
        "payouts[0].destination",
        body(payouts=payouts(**{"0": {"destination": "not an address!"}})),
    ),
    Case(
        "missing destination",
        422,
        "payouts[0].destination",
        body(payouts=payouts(**{"0": {"destination": _DROP}})),
    ),
    Case(
        "unknown payout field",
        422,
        "payouts[4].fee_sat",
        body(payouts=payouts(**{"4": {"fee_sat": 10}})),
    ),
    Case(
        "payout reference too long",
        422,
        "payouts[2].reference",
        body(payouts=payouts(**{"2": {"reference": "r" * 201}})),
    ),
    Case("payout not an object", 422, "payouts[1]", body(payouts=[payouts(1)[0], 7])),
    Case("no payouts", 422, "payouts", body(payouts=[])),
    Case("payouts not a list", 422, "payouts", body(payouts={"destination": "x"})),
    Case("missing payouts", 422, "payouts", body(payouts=_DROP)),
    Case(
        "over the cap",
        422,
        "payouts",
        body(payouts=[payouts(1)[0]] * (MAX_ROUND_PAYOUTS + 1)),
    ),
    Case("round reference too long", 422, "reference", body(reference="r" * 201)),
    Case("missing wallet", 422, "wallet", body(wallet=_DROP)),
    Case("unknown wallet", 404, "wallet", body(wallet="no-such-wallet"), code="not_found"),
    Case("unknown field", 422, "destination", body(destination="x")),
    Case("missing key", 422, "Idempotency-Key", body(), key=None),
    Case("key too long", 422, "Idempotency-Key", body(), key="k" * 201),
]


def _written(runtime: Runtime) -> dict[str, int]:
    return count_rows(runtime.db, Withdrawal, PayoutRound, IdempotencyKey, AuditEvent)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_round_names_the_field_and_writes_nothing(shared_app: SharedApp, case: Case) -> None:
    key = f"round-{case.id}" if case.key == "auto" else case.key
    before = _written(shared_app.runtime)
    response = shared_app.client.post(
        "/v1/payout-rounds", headers=auth(shared_app.tokens.all, key), json=case.json
    )
    assert response.status_code == case.status, response.text
    payload = response.json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["field"] == case.field, error
    if case.code is not None:
        assert error["code"] == case.code, error
    assert "Traceback" not in error["message"]
    assert _written(shared_app.runtime) == before
    # Nothing was reserved: the same key with a good round is accepted.
    good = shared_app.client.post(
        "/v1/payout-rounds",
        headers=auth(shared_app.tokens.all, f"round-{case.id}"),
        json=body(payouts=payouts(2, tag=f"follow-up {case.id}")),
    )
    assert good.status_code == 201, good.text
