"""The active policy is parsed once per version, and a database edit is still caught after
it was cached: the row's tag is verified on every request, and its document is compared with
the one the cached parse came from."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.conftest import Tokens
from tests.helpers import external_destination, request_payout
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import PolicyVersion
from walletsvc.governance import policies

DEST, _ = external_destination("cached policy")


def _active_row(runtime: Runtime) -> PolicyVersion:
    with runtime.db.read() as uow:
        return uow.session.scalars(select(PolicyVersion)).one()


def _edit(runtime: Runtime, row_id: str, **values: Any) -> None:
    """A direct edit, as an intruder with database access would make it."""
    with runtime.db.engine.begin() as conn:
        conn.execute(update(PolicyVersion).where(PolicyVersion.id == row_id).values(**values))


def test_the_policy_is_parsed_once_per_version(
    client: TestClient, runtime: Runtime, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[object] = []
    real_parse = policies.parse_policy

    def counting_parse(document: Any) -> Any:
        parses.append(document)
        return real_parse(document)

    monkeypatch.setattr(policies, "parse_policy", counting_parse)
    for key in ("c-1", "c-2", "c-3"):
        assert request_payout(client, tokens.all, key=key, destination=DEST).status_code == 201
    assert len(parses) <= 1  # none if an earlier request in this process parsed this version


def test_editing_the_document_after_it_was_cached_is_caught(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    assert request_payout(client, tokens.all, key="e-1", destination=DEST).status_code == 201
    row = _active_row(runtime)
    loosened = {**row.document, "max_per_payout_sat": 2_100_000_000_000_000}
    _edit(runtime, row.id, document=loosened)
    response = request_payout(client, tokens.all, key="e-2", destination=DEST)
    assert response.status_code == 500, response.text
    assert response.json()["error"] == {
        "code": "integrity_failure",
        "message": f"policy version {row.version} does not match its hash",
        "field": None,
    }


def test_editing_the_tagged_fields_after_it_was_cached_is_caught(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    assert request_payout(client, tokens.all, key="t-1", destination=DEST).status_code == 201
    row = _active_row(runtime)
    _edit(runtime, row.id, version=row.version + 1)
    response = request_payout(client, tokens.all, key="t-2", destination=DEST)
    assert response.status_code == 500, response.text
    assert response.json()["error"]["message"] == (
        f"policy version {row.version + 1} fails its integrity check"
    )
