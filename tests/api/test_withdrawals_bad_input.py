"""Bad payout requests: the right 4xx, the field named, the contract's error shape, and nothing
written (no withdrawal, no idempotency key, no transaction, no audit event but a denial's)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from bip_utils import Base58Encoder, SegwitBech32Encoder
from fastapi.testclient import TestClient

from tests.conftest import WALLET, SharedApp, auth
from tests.helpers import audit_actions, count_rows, external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent, ChainTransaction, IdempotencyKey, Withdrawal

_HASH = hashlib.new("ripemd160", hashlib.sha256(b"bad input miner").digest()).digest()
GOOD = str(SegwitBech32Encoder.Encode("bcrt", 0, _HASH))
MAINNET_BECH32 = str(SegwitBech32Encoder.Encode("bc", 0, _HASH))
TESTNET_BECH32 = str(SegwitBech32Encoder.Encode("tb", 0, _HASH))
MAINNET_P2PKH = str(Base58Encoder.CheckEncode(b"\x00" + _HASH))
MAINNET_P2SH = str(Base58Encoder.CheckEncode(b"\x05" + _HASH))
BAD_CHECKSUM = GOOD[:-1] + ("q" if GOOD[-1] != "q" else "p")
MIXED_CASE = GOOD[:10].upper() + GOOD[10:]
SUPPLY_SAT = 21_000_000 * 100_000_000
AUTO_KEY = "<auto>"


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"wallet": WALLET, "destination": GOOD, "amount_sat": 100_000}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    field: str | None
    json: Any = None
    raw: bytes | None = None  # sent as-is with Content-Type: application/json
    key: str | None = AUTO_KEY  # AUTO_KEY: a key of this case's own
    code: str | None = None

    @property
    def idempotency_key(self) -> str | None:
        return f"key-{self.id}" if self.key == AUTO_KEY else self.key


CASES = [
    Case("float", 422, "amount_sat", body(amount_sat=1.5), code="invalid_amount"),
    Case("integral float", 422, "amount_sat", body(amount_sat=100000.0), code="invalid_amount"),
    Case("numeric string", 422, "amount_sat", body(amount_sat="100000"), code="invalid_amount"),
    Case("decimal string", 422, "amount_sat", body(amount_sat="1.5"), code="invalid_amount"),
    Case("negative", 422, "amount_sat", body(amount_sat=-100_000), code="invalid_amount"),
    Case("zero", 422, "amount_sat", body(amount_sat=0), code="invalid_amount"),
    Case("dust", 422, "amount_sat", body(amount_sat=545), code="invalid_amount"),
    Case("above supply", 422, "amount_sat", body(amount_sat=SUPPLY_SAT + 1), code="invalid_amount"),
    Case("huge integer", 422, "amount_sat", body(amount_sat=10**30), code="invalid_amount"),
    Case("boolean", 422, "amount_sat", body(amount_sat=True), code="invalid_amount"),
    Case("null amount", 422, "amount_sat", body(amount_sat=None), code="invalid_amount"),
    Case("mainnet bech32", 422, "destination", body(destination=MAINNET_BECH32)),
    Case("testnet bech32", 422, "destination", body(destination=TESTNET_BECH32)),
    Case("mainnet p2pkh", 422, "destination", body(destination=MAINNET_P2PKH)),
    Case("mainnet p2sh", 422, "destination", body(destination=MAINNET_P2SH)),
    Case("bad checksum", 422, "destination", body(destination=BAD_CHECKSUM)),
    Case("mixed case", 422, "destination", body(destination=MIXED_CASE)),
    Case("garbage address", 422, "destination", body(destination="not an address!")),
    Case("empty address", 422, "destination", body(destination="")),
    Case("address not a string", 422, "destination", body(destination=12345)),
    Case("unknown wallet", 404, "wallet", body(wallet="no-such-wallet"), code="not_found"),
    Case(
        "wallet with NUL",
        422,
        "wallet",
        body(wallet="pool\x00hot"),
        code="invalid_input",
    ),
    Case("missing key", 422, "Idempotency-Key", body(), key=None),
    Case("empty key", 422, "Idempotency-Key", body(), key=""),
    Case("key too long", 422, "Idempotency-Key", body(), key="k" * 201),
    Case("missing wallet", 422, "wallet", body(wallet=_DROP)),
    Case("missing destination", 422, "destination", body(destination=_DROP)),
    Case("missing amount", 422, "amount_sat", body(amount_sat=_DROP), code="invalid_amount"),
    Case("unknown field", 422, "fee_sat", body(fee_sat=1_000)),
    Case("reference too long", 422, "reference", body(reference="r" * 201)),
    Case("reference not a string", 422, "reference", body(reference=7)),
    Case("reference with NUL", 422, "reference", body(reference="round\x007")),
    Case("body is a list", 422, None, [body()]),
    Case(
        "invalid JSON",
        422,
        None,
        raw=b'{"wallet": "pool-hot", "amount_sat": 1',
        code="invalid_json",
    ),
    Case("empty body", 422, None, raw=b""),
]

# The policy maximum (policies/default.yaml: max_per_payout_sat 50_000_000).
OVER_MAXIMUM = Case(
    "over the policy maximum", 422, "amount_sat", body(amount_sat=50_000_001), code="policy_denied"
)


def _post(client: TestClient, token: str, case: Case) -> Any:
    headers = auth(token, case.idempotency_key)
    if case.raw is not None:
        headers["Content-Type"] = "application/json"
        return client.post("/v1/withdrawals", headers=headers, content=case.raw)
    return client.post("/v1/withdrawals", headers=headers, json=case.json)


def _written(runtime: Runtime) -> dict[str, int]:
    return count_rows(runtime.db, Withdrawal, IdempotencyKey, ChainTransaction, AuditEvent)


def _assert_error_shape(payload: Any, case: Case) -> dict[str, Any]:
    assert set(payload) == {"error"}, payload
    error: dict[str, Any] = payload["error"]
    assert {"code", "message", "field"} <= set(error)
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    assert error["field"] == case.field, error
    if case.code is not None:
        assert error["code"] == case.code, error
    return error


def _good_request(app: SharedApp, case: Case) -> Any:
    """The same token and key, with a valid body: must be accepted (nothing was reserved)."""
    destination, _ = external_destination(f"bad input follow-up {case.id}")
    return app.client.post(
        "/v1/withdrawals",
        headers=auth(app.tokens.all, f"key-{case.id}"),
        json=body(destination=destination),
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_refused_and_writes_nothing(shared_app: SharedApp, case: Case) -> None:
    before = _written(shared_app.runtime)
    response = _post(shared_app.client, shared_app.tokens.all, case)
    assert response.status_code == case.status, response.text
    _assert_error_shape(response.json(), case)
    assert _written(shared_app.runtime) == before
    good = _good_request(shared_app, case)
    assert good.status_code == 201, good.text


def test_over_the_policy_maximum_is_denied_with_its_decision(shared_app: SharedApp) -> None:
    runtime = shared_app.runtime
    before = count_rows(runtime.db)
    response = _post(shared_app.client, shared_app.tokens.all, OVER_MAXIMUM)
    assert response.status_code == 422, response.text
    error = _assert_error_shape({"error": _without_decision(response.json())}, OVER_MAXIMUM)
    decision = response.json()["error"]["decision"]
    assert decision["outcome"] == "deny"
    failed = [r for r in decision["rules"] if r["result"] == "fail"]
    assert [r["rule"] for r in failed] == ["max_per_payout"]
    assert "50000000" in failed[0]["detail"]
    assert "max_per_payout" in error["message"]
    assert count_rows(runtime.db) == before
    # A denied request does not burn its idempotency key.
    assert _good_request(shared_app, OVER_MAXIMUM).status_code == 201


def test_policy_denial_leaves_its_audit_event(shared_app: SharedApp) -> None:
    before = audit_actions(shared_app.runtime.db)
    denied = Case("denied again", 422, "amount_sat", body(amount_sat=50_000_001))
    response = _post(shared_app.client, shared_app.tokens.all, denied)
    assert response.status_code == 422
    assert audit_actions(shared_app.runtime.db) == [*before, "withdrawal.denied"]


def _without_decision(payload: dict[str, Any]) -> dict[str, Any]:
    error = dict(payload["error"])
    error.pop("decision")
    return error


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer wsvc_not-a-real-token"}, 401, "unauthenticated"),
        ({"Authorization": "Bearer "}, 401, "unauthenticated"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "unauthenticated"),
        ("read_only", 403, "forbidden"),
    ],
    ids=["no token", "bad token", "empty bearer", "basic auth", "lacks scope"],
)
def test_unauthenticated_or_unauthorised_writes_nothing(
    shared_app: SharedApp, headers: dict[str, str] | str, status: int, code: str
) -> None:
    runtime = shared_app.runtime
    if headers == "read_only":
        headers = auth(shared_app.tokens.read_only)
    assert isinstance(headers, dict)
    before = _written(runtime)
    response = shared_app.client.post(
        "/v1/withdrawals", headers={**headers, "Idempotency-Key": "k"}, json=body()
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert _written(runtime) == before
