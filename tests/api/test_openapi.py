"""The OpenAPI document describes every answer: a JSON schema for each success, the one error
body for each failure, and the bodies the service really sends match what it declares."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from jsonschema import Draft202012Validator

from tests.conftest import WALLET, Tokens, auth
from tests.governance_helpers import DEST, Team
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime

# Success responses that are not JSON, with the media type they are declared with.
NOT_JSON = {("get", "/v1/metrics"): "text/plain", ("get", "/metrics"): "text/plain"}
ERROR_BODY = "#/components/schemas/ErrorBody"
# Failures answered with another body: readiness reports which check failed.
OTHER_ERROR_BODIES = {("get", "/v1/ready", "503"): "#/components/schemas/Readiness"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # No lifespan: the document needs no database, chain or keys.
    response = TestClient(create_app()).get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def test_every_operation_declares_a_success_response(document: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in operations(document)
        if not any(status.startswith("2") for status in operation["responses"])
    ]
    assert len(operations(document)) > 30
    assert missing == []


def test_every_success_response_has_a_json_schema(document: dict[str, Any]) -> None:
    problems = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            content = response.get("content", {})
            if (method, path) in NOT_JSON:
                media = next(iter(content), "")
                if not media.startswith(NOT_JSON[method, path]):
                    problems.append(f"{method.upper()} {path} {status}: {media or 'no content'}")
                continue
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            if ref is None:
                problems.append(f"{method.upper()} {path} {status}: no JSON schema")
                continue
            schema = resolve(document, ref)
            if schema.get("type") != "object" or not schema.get("properties"):
                problems.append(f"{method.upper()} {path} {status}: {ref} is not an object")
    assert problems == []


def test_204_responses_have_no_body(document: dict[str, Any]) -> None:
    no_content = [
        (method, path, operation["responses"]["204"])
        for method, path, operation in operations(document)
        if "204" in operation["responses"]
    ]
    assert {(m, p) for m, p, _ in no_content} == {
        ("delete", "/v1/sessions/current"),
        ("delete", "/v1/allowlist/{entry_id}"),
        ("delete", "/v1/webhooks/{webhook_id}"),
        ("delete", "/v1/passkeys/{passkey_id}"),
    }
    assert all("content" not in response for _, _, response in no_content)


def test_every_error_response_is_the_error_body(document: dict[str, Any]) -> None:
    problems = []
    for method, path, operation in operations(document):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        if "500" not in errors:
            problems.append(f"{method.upper()} {path}: no 500")
        for status, response in errors.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            expected = OTHER_ERROR_BODIES.get((method, path, status), ERROR_BODY)
            if schema.get("$ref") != expected:
                problems.append(f"{method.upper()} {path} {status}: {schema}")
    assert problems == []
    # FastAPI's own validation error shape is never sent (errors.py renders ErrorBody).
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_error_body_is_the_contract_shape(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error"]
    detail = resolve(document, body["properties"]["error"]["$ref"])
    assert detail["required"] == ["code", "message", "field"]
    assert detail["properties"]["code"]["type"] == "string"
    assert detail["properties"]["message"]["type"] == "string"
    assert detail["properties"]["field"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


def test_success_schemas_pin_satoshis_as_integers_and_times_as_date_time(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    withdrawal = schemas["WithdrawalView"]["properties"]
    assert withdrawal["amount_sat"] == {"type": "integer", "title": "Amount Sat"}
    assert withdrawal["created_at"]["format"] == "date-time"
    assert {"type": "integer"} in withdrawal["fee_sat"]["anyOf"]
    assert all(p["type"] == "integer" for p in schemas["Balances"]["properties"].values())
    assert set(withdrawal) >= {"id", "status", "decision", "txid", "raw_tx", "confirmations"}


class Checker:
    """Checks each real response against what the document declares for its operation."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, response: Response, status: int) -> Any:
        assert response.status_code == status, response.text
        method = response.request.method.lower()
        url_path = response.request.url.path
        path = next(p for pattern, p in self.routes if pattern.match(url_path))
        declared = self.document["paths"][path][method]["responses"]
        assert str(status) in declared, f"{method.upper()} {path} answered undeclared {status}"
        self.seen.add((method, path, status))
        if status == 204:
            assert response.content == b""
            return None
        schema = declared[str(status)]["content"]["application/json"]["schema"]
        body = response.json()
        validator = Draft202012Validator({**schema, "components": self.document["components"]})
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], f"{method.upper()} {path} {status}"
        return body


def test_real_responses_match_their_declared_schemas(
    document: dict[str, Any], client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    check = Checker(document)
    token = auth(tokens.all)
    team = Team(runtime)
    otto = team.login(team.add("otto", role="operator"))

    check(client.get("/v1/health"), 200)
    assert check(client.get("/v1/ready"), 200) == {"ready": True}
    ready = check(client.get("/v1/ready", headers=token), 200)
    assert set(ready["checks"]["chain"]) == {"status", "height", "hash"}
    check(client.get("/v1/wallets", headers=token), 200)
    wallet = check(client.get(f"/v1/wallets/{WALLET}", headers=token), 200)
    assert wallet["hot_thresholds"] is None or set(wallet["hot_thresholds"]) == {
        "ceiling_sat",
        "target_sat",
        "floor_sat",
    }
    issued = check(
        client.post(f"/v1/wallets/{WALLET}/deposit-addresses", json={}, headers=token), 201
    )
    assert issued["label"] is None and issued["retired"] is False
    check(client.get(f"/v1/wallets/{WALLET}/deposit-addresses/current", headers=token), 200)
    check(client.get(f"/v1/wallets/{WALLET}/deposit-addresses", headers=token), 200)

    payout = {"wallet": WALLET, "destination": DEST, "amount_sat": 50_000}
    created = check(client.post("/v1/withdrawals", json=payout, headers=auth(tokens.all, "k")), 201)
    # Nulls stay nulls: nothing is dropped and nothing is added by the response model.
    assert created["reference"] is None and created["txid"] is None
    assert created["fee_sat"] is None and created["approvals"] == []
    replayed = check(
        client.post("/v1/withdrawals", json=payout, headers=auth(tokens.all, "k")), 200
    )
    assert replayed == created
    check(client.get(f"/v1/withdrawals/{created['id']}", headers=token), 200)
    page = check(client.get("/v1/withdrawals", headers=token), 200)
    assert page["next_cursor"] is None
    cancelled = check(client.post(f"/v1/withdrawals/{created['id']}/cancel", headers=token), 200)
    assert cancelled["status"] == "cancelled"

    payout_round = {
        "wallet": WALLET,
        "reference": "round 1",
        "payouts": [{"destination": DEST, "amount_sat": 40_000}],
    }
    round_view = check(
        client.post("/v1/payout-rounds", json=payout_round, headers=auth(tokens.all, "rk")), 201
    )
    assert round_view["payouts"][0]["txid"] is None
    check(client.post("/v1/payout-rounds", json=payout_round, headers=auth(tokens.all, "rk")), 200)
    check(client.get(f"/v1/payout-rounds/{round_view['id']}", headers=token), 200)
    rounds_page = check(client.get("/v1/payout-rounds", headers=token), 200)
    assert rounds_page["next_cursor"] is None
    over_round = {**payout_round, "payouts": [{"destination": DEST, "amount_sat": 60_000_000}]}
    refused = check(
        client.post("/v1/payout-rounds", json=over_round, headers=auth(tokens.all, "rd")), 422
    )
    assert refused["error"]["payouts"][0]["index"] == 0

    check(client.get("/v1/approvals", headers=token), 200)
    check(client.get("/v1/allowlist", headers=token), 200)
    check(client.get("/v1/policy", headers=token), 200)
    check(client.get("/v1/policy/proposals", headers=token), 200)
    audit = check(client.get("/v1/audit", headers=token), 200)
    assert audit["events"] and audit["next_after"] == audit["events"][-1]["seq"]
    check(client.get("/v1/sweeps", headers=token), 200)
    check(client.get(f"/v1/wallets/{WALLET}/cold-destination", headers=token), 200)

    too_big = {**payout, "amount_sat": 60_000_000}  # above the default policy's max_per_payout
    denied = check(client.post("/v1/withdrawals", json=too_big, headers=auth(tokens.all, "d")), 422)
    assert denied["error"]["code"] == "policy_denied"
    assert denied["error"]["decision"]["outcome"] == "deny"
    frozen = check(client.post("/v1/freeze", json={"reason": "drill"}, headers=token), 201)
    locked = check(client.post("/v1/withdrawals", json=payout, headers=auth(tokens.all, "f")), 423)
    locked_round = check(
        client.post("/v1/payout-rounds", json=payout_round, headers=auth(tokens.all, "rf")), 423
    )
    assert locked_round["error"]["code"] == "frozen"
    assert locked["error"]["code"] == "frozen"
    assert frozen["lifted_at"] is None and frozen["wallet"] is None
    state = check(client.get("/v1/freeze", headers=token), 200)
    assert [f["id"] for f in state["freezes"]] == [frozen["id"]]
    issuing = client.post(f"/v1/wallets/{WALLET}/deposit-addresses", json={}, headers=token)
    assert check(issuing, 423)["error"]["code"] == "frozen"
    unfreeze = check(client.post("/v1/unfreeze", json={"reason": "over"}, headers=token), 201)
    assert unfreeze["approval"]["id"] == unfreeze["approval_request_id"]
    check(client.get(f"/v1/unfreeze/{unfreeze['id']}", headers=token), 200)
    listed = check(client.get("/v1/unfreeze", headers=token), 200)
    assert "approval" not in listed["unfreeze_requests"][0]
    check(client.get(f"/v1/approvals/{unfreeze['approval_request_id']}", headers=token), 200)

    rotation = check(
        client.post(
            f"/v1/wallets/{WALLET}/rotate", json={"reason": "drill"}, headers=otto.headers()
        ),
        201,
    )
    assert rotation["approval"]["kind"] == "key_rotation"
    check(client.get(f"/v1/rotations/{rotation['id']}", headers=token), 200)
    check(client.get(f"/v1/wallets/{WALLET}/rotations", headers=token), 200)
    check(client.delete("/v1/sessions/current", headers=otto.headers()), 204)

    # Errors: each one is declared for its operation and has the one error body.
    check(client.get("/v1/wallets"), 401)
    check(client.get("/v1/wallets/nope", headers=token), 404)
    check(client.post("/v1/withdrawals", json=payout, headers=auth(tokens.read_only, "r")), 403)
    bad = {**payout, "amount_sat": 1.5}
    error = check(client.post("/v1/withdrawals", json=bad, headers=auth(tokens.all, "b")), 422)
    assert error["error"]["field"] == "amount_sat"
    bad_round = {**payout_round, "payouts": [{"destination": DEST, "amount_sat": 1.5}]}
    round_error = check(
        client.post("/v1/payout-rounds", json=bad_round, headers=auth(tokens.all, "rb")), 422
    )
    assert round_error["error"]["field"] == "payouts[0].amount_sat"
    check(client.get("/v1/payout-rounds/nope", headers=token), 404)
    conflict = check(client.post(f"/v1/withdrawals/{created['id']}/cancel", headers=token), 409)
    assert set(conflict["error"]) == {"code", "message", "field"}


def test_every_operation_has_an_example_that_matches_its_schema(
    document: dict[str, Any],
) -> None:
    problems = []
    for method, path, operation in operations(document):
        label = f"{method.upper()} {path}"
        bodies = [
            (status, response.get("content", {}).get("application/json"))
            for status, response in operation["responses"].items()
            if status.startswith("2") and status != "204"
        ]
        request = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if request is not None:
            bodies.append(("request", request))
        json_bodies = [(status, body) for status, body in bodies if body is not None]
        if (
            not json_bodies
            and (method, path) not in NOT_JSON
            and "204" not in operation["responses"]
        ):
            problems.append(f"{label}: no JSON body to illustrate")
        for status, body in json_bodies:
            if "example" not in body:
                problems.append(f"{label} {status}: no example")
                continue
            schema = {**body["schema"], "components": document["components"]}
            for error in Draft202012Validator(schema).iter_errors(body["example"]):
                problems.append(f"{label} {status}: {error.message} at {list(error.path)}")
    assert problems == []
