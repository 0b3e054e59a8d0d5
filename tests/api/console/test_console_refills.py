"""Refills in the console over real HTTP (no browser): propose, download the PSBT, upload it
signed (file or pasted), cancel, and every refusal with its message and no state change.
The stand-in hardware wallet is embit holding the test's cold keys (tests/treasury)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from embit import script
from embit.psbt import PSBT
from fastapi.testclient import TestClient

from tests.api.console.helpers import csrf_of, log_in
from tests.conftest import WALLET
from tests.governance_helpers import Team
from tests.treasury.cold_wallets import root, single_key, two_of_three
from tests.treasury.test_refills import with_cold_coins
from walletsvc.bootstrap.runtime import Runtime

TARGET = 200_000_000  # the default policy's hot target; the hot wallet starts empty


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    team.add("olga", role="operator", groups=())
    team.add("alice")
    return team


def _propose(client: TestClient, page: str) -> tuple[str, str]:
    """Press **Propose refill**; returns the refill's id and its page."""
    proposed = client.post(f"/console/wallets/{WALLET}/refills", data={"csrf_token": csrf_of(page)})
    assert proposed.status_code == 201, proposed.text
    found = re.search(r'action="/console/refills/([0-9a-f-]{36})/signatures"', proposed.text)
    assert found, proposed.text
    return found.group(1), proposed.text


def _download(client: TestClient, refill_id: str) -> PSBT:
    response = client.get(f"/console/refills/{refill_id}/psbt")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return PSBT.from_string(response.text)


def _upload(
    client: TestClient, page: str, refill_id: str, *, file: bytes | None = None, text: str = ""
) -> Any:
    files = {"psbt_file": ("signed.psbt", file, "application/octet-stream")} if file else None
    return client.post(
        f"/console/refills/{refill_id}/signatures",
        data={"psbt_text": text, "csrf_token": csrf_of(page)},
        files=files,
    )


def _state(runtime: Runtime, refill_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = runtime.refills.show(refill_id)
    return shown


def test_an_operator_proposes_a_refill_against_floor_and_target(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    with_cold_coins(runtime, single_key())
    page = log_in(client, team.members["olga"])
    listed = client.get("/console/refills").text
    assert "Below its floor: refill from cold." in listed
    for shown in ("Floor", "50,000,000 sat", "Target", "200,000,000 sat", "Propose refill"):
        assert shown in listed
    assert "A refill now brings" in listed
    wallets = client.get("/console/wallets").text
    assert 'Below its floor: <a href="/console/refills">refill from cold</a>.' in wallets

    refill_id, detail = _propose(client, page)
    assert "Refill proposed" in detail and "input 1: 0 of 1" in detail
    for button in ("Download PSBT", "Upload", "Cancel"):
        assert f">{button}</button>" in detail
    for label in ("Signed PSBT file", "Or paste the signed PSBT (base64)"):
        assert f">{label}</label>" in detail
    psbt = _download(client, refill_id)
    assert psbt.to_string() == _state(runtime, refill_id)["psbt"]
    # One refill at a time: the page offers the open one, and a second proposal is refused.
    again = client.post(f"/console/wallets/{WALLET}/refills", data={"csrf_token": csrf_of(page)})
    assert again.status_code == 409 and "still waiting for signatures" in again.text


@pytest.mark.parametrize("binary", [True, False], ids=["binary file", "base64 file"])
def test_a_signed_psbt_file_completes_a_single_key_refill(
    client: TestClient, team: Team, binary: bool
) -> None:
    runtime = team.runtime
    cold = single_key()
    with_cold_coins(runtime, cold)
    page = log_in(client, team.members["olga"])
    refill_id, page = _propose(client, page)
    psbt = _download(client, refill_id)
    assert psbt.sign_with(cold.signers[0]) == len(psbt.inputs)
    file = psbt.serialize() if binary else psbt.to_string().encode()
    done = _upload(client, page, refill_id, file=file)
    assert done.status_code == 200, done.text
    assert "The refill is complete and broadcast." in done.text
    assert _state(runtime, refill_id)["status"] == "broadcast"


def test_approvers_paste_their_signatures_of_a_two_of_three_refill(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    cold = two_of_three()
    with_cold_coins(runtime, cold)
    page = log_in(client, team.members["olga"])
    refill_id, _ = _propose(client, page)
    client.cookies.clear()
    page = log_in(client, team.members["alice"])  # approvers may upload, not propose
    assert "Propose refill" not in client.get("/console/refills").text
    detail = client.get(f"/console/refills/{refill_id}").text
    assert "input 1: 0 of 2" in detail and ">Cancel</button>" not in detail
    for n, signer in enumerate(cold.signers[:2], start=1):
        psbt = _download(client, refill_id)
        psbt.sign_with(signer)
        answer = _upload(client, page, refill_id, text=psbt.to_string())
        assert answer.status_code == 200, answer.text
        assert f"input 1: {n} of 2" in answer.text
    assert "complete and broadcast" in answer.text
    assert _state(runtime, refill_id)["status"] == "broadcast"


def _pays_an_attacker(psbt: PSBT) -> None:
    psbt.outputs[0].script_pubkey = script.p2wpkh(root("attacker").key)


@pytest.mark.parametrize(
    ("upload", "status", "message"),
    [
        ({"text": "not base64 at all!"}, 422, "psbt"),
        ({"text": base64.b64encode(b"hello, not a psbt").decode()}, 422, "psbt"),
        ({"file": b"\x00\xff\xfe binary junk"}, 422, "neither a binary PSBT nor base64 text"),
        ({}, 422, "choose a signed PSBT file or paste its base64"),
        ({"text": "cHNidP8=", "file": b"cHNidP8="}, 422, "not both"),
        ({"other": _pays_an_attacker}, 422, "output 0 pays another script"),
    ],
    ids=["garbage", "not a psbt", "binary junk", "nothing", "both", "other outputs"],
)
def test_a_bad_upload_is_a_clear_message_and_changes_nothing(
    client: TestClient, team: Team, upload: dict[str, Any], status: int, message: str
) -> None:
    runtime = team.runtime
    cold = single_key()
    with_cold_coins(runtime, cold)
    page = log_in(client, team.members["olga"])
    refill_id, page = _propose(client, page)
    before = _state(runtime, refill_id)
    if "other" in upload:
        psbt = _download(client, refill_id)
        upload["other"](psbt)
        psbt.sign_with(cold.signers[0])  # the device was shown the altered transaction
        upload = {"text": psbt.to_string()}
    answer = _upload(client, page, refill_id, file=upload.get("file"), text=upload.get("text", ""))
    assert answer.status_code == status
    assert 'class="notice error"' in answer.text and message in answer.text
    assert "(field: psbt)" in answer.text
    assert _state(runtime, refill_id) == before


def test_refill_forms_need_their_csrf_token(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    cold = single_key()
    with_cold_coins(runtime, cold)
    page = log_in(client, team.members["olga"])
    forged = client.post(f"/console/wallets/{WALLET}/refills", data={})
    assert forged.status_code == 403 and runtime.refills.recent(5) == []
    refill_id, page = _propose(client, page)
    before = _state(runtime, refill_id)
    psbt = _download(client, refill_id)
    psbt.sign_with(cold.signers[0])
    refused = client.post(
        f"/console/refills/{refill_id}/signatures", data={"psbt_text": psbt.to_string()}
    )
    assert refused.status_code == 403
    assert client.post(f"/console/refills/{refill_id}/cancel", data={}).status_code == 403
    assert _state(runtime, refill_id) == before


def test_an_operator_cancels_a_refill(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    with_cold_coins(runtime, single_key())
    page = log_in(client, team.members["olga"])
    refill_id, page = _propose(client, page)
    cancelled = client.post(
        f"/console/refills/{refill_id}/cancel", data={"csrf_token": csrf_of(page)}
    )
    assert cancelled.status_code == 200 and "Refill cancelled" in cancelled.text
    assert _state(runtime, refill_id)["status"] == "cancelled"
    assert ">Upload</button>" not in cancelled.text
    again = client.post(f"/console/refills/{refill_id}/cancel", data={"csrf_token": csrf_of(page)})
    assert again.status_code == 409 and "it cannot be cancelled" in again.text
    # The coins are free again: a new refill can be proposed.
    _propose(client, page)
