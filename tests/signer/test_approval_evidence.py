"""Approvals are evidence the signer verifies itself: an attacker with the API process forges
them on the signer's socket and gets nothing signed above a tier.

The attacker here writes raw JSON lines to the signer's socket (what root on the API host
can do). Staff are enrolled during genesis (the trusted start), genesis is closed, and then
every decision must carry a step-up the signer checks itself (the TOTP secrets are sealed in
its ledger), on content whose digest the signer computes; a payout above the policy's 0.1 BTC
tier (policies/default.yaml: 2 of treasury) is signed only on such a quorum. The signer's
clock is the fixtures' injected one (tests.conftest.SIGNER_CLOCK): no sleeping, no
step-boundary luck.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest

from tests.conftest import SIGNER_CLOCK, WALLET, fund_wallet
from tests.helpers import external_destination
from tests.signer.helpers import coins, plan_paying
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.canonical import canonical_json, content_digest
from walletsvc.domain.transaction import ApprovedPayout, TransactionPlan
from walletsvc.signer import wire

TIER_SAT = 10_000_000  # above this, policies/default.yaml wants 2 of treasury
AMOUNT_SAT = 20_000_000
ADDRESS, SCRIPT = external_destination("a miner paid above the tier")


class RawSigner:
    """The signer's socket spoken to directly: any op, any params, one JSON line each way
    (a signing batch, passed as ``batch=<bytes>``, follows its line as the attachment)."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")

    def __repr__(self) -> str:
        return "RawSigner()"

    def ask(self, op: str, **params: Any) -> dict[str, Any]:
        batch = params.pop("batch", None)
        envelope: dict[str, Any] = {"id": uuid.uuid4().hex, "op": op, "params": params}
        if batch is not None:
            envelope["attachment"] = len(batch)
        self._file.write(json.dumps(envelope).encode() + b"\n" + (batch or b""))
        self._file.flush()
        reply: dict[str, Any] = json.loads(self._file.readline())
        return reply

    def ok(self, op: str, **params: Any) -> dict[str, Any]:
        reply = self.ask(op, **params)
        assert reply["ok"] is True, reply
        result: dict[str, Any] = reply["result"]
        return result

    def refused(self, op: str, code: str, **params: Any) -> str:
        reply = self.ask(op, **params)
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] == code, reply
        message: str = reply["error"]["message"]
        return message

    def close(self) -> None:
        self._file.close()
        self._sock.close()


@dataclass
class Signer:
    """The raw socket, the signer's clock (30 s, one TOTP step, further at each code) and the
    secrets the signer answered at enrolment."""

    raw: RawSigner
    runtime: Runtime
    moment: datetime
    secrets: dict[str, str] = field(default_factory=dict)

    def code(self, name: str) -> str:
        """A code of the signer's current step; the clock then moves one step on."""
        SIGNER_CLOCK.pinned = self.moment
        code = pyotp.TOTP(self.secrets[name]).at(self.moment)
        self.moment += timedelta(seconds=30)
        return code

    def ask(self, op: str, **params: Any) -> dict[str, Any]:
        SIGNER_CLOCK.pinned = self.moment
        return self.raw.ask(op, **params)

    def ok(self, op: str, **params: Any) -> dict[str, Any]:
        SIGNER_CLOCK.pinned = self.moment
        return self.raw.ok(op, **params)

    def refused(self, op: str, code: str, **params: Any) -> str:
        SIGNER_CLOCK.pinned = self.moment
        return self.raw.refused(op, code, **params)

    def enrol(self, name: str, role: str = "approver", groups: tuple[str, ...] = ("treasury",)):
        answer = self.ok(
            "enrol_staff", staff_id=f"id-{name}", username=name, role=role, groups=list(groups)
        )
        self.secrets[name] = answer["totp_secret"]
        assert answer["otpauth_uri"].startswith("otpauth://totp/")

    def decide(self, name: str, content: dict[str, Any], decision: str = "approve") -> str:
        answer = self.ok(
            "record_decision",
            staff_id=f"id-{name}",
            kind=content["kind"],
            content=content,
            decision=decision,
            totp=self.code(name),
        )
        digest: str = answer["digest"]
        return digest


@pytest.fixture
def signer(runtime: Runtime) -> Iterator[Signer]:
    """A funded wallet; alice, bob and carol approve (treasury), olga operates; genesis closed."""
    fund_wallet(runtime)
    step = int(datetime.now(UTC).timestamp()) // 30 + 10
    raw = RawSigner(str(runtime.settings.signer_socket))
    s = Signer(raw, runtime, datetime.fromtimestamp(step * 30, UTC))
    for name in ("alice", "bob", "carol"):
        s.enrol(name)
    s.enrol("olga", role="operator", groups=())
    assert s.ok("close_genesis")["genesis_open"] is False
    yield s
    raw.close()


def content_of(payout: ApprovedPayout, **changes: Any) -> dict[str, Any]:
    """The payout's approval content, as payouts.intake.approval_content makes it."""
    content = {
        "kind": "withdrawal",
        "withdrawal_id": payout.withdrawal_id,
        "wallet_id": "wallet-row-id",
        "destination": ADDRESS,
        "script_pubkey": bytes(payout.script_pubkey).hex(),
        "amount_sat": payout.amount_sat,
        "reference": "round 81",
    }
    content.update(changes)
    return content


def sign_params(plan: TransactionPlan, payout: ApprovedPayout, content: dict[str, Any] | None):
    if content is not None:
        payout = replace(payout, approval=canonical_json(content).decode())
    return {"wallet": WALLET, "kind": "payout", "batch": wire.pack_batch(plan, [payout])}


def above_tier(s: Signer, withdrawal_id: str = "w-above") -> tuple[ApprovedPayout, TransactionPlan]:
    payout = ApprovedPayout(withdrawal_id, SCRIPT, AMOUNT_SAT)
    return payout, plan_paying(s.runtime, [payout], using=coins(s.runtime)[:1])


def signed_count(s: Signer) -> int:
    return int(s.ok("status")["signed_transactions"])


# --- forged decisions ------------------------------------------------------------------------


def test_decisions_for_unknown_or_disabled_staff_are_refused(signer: Signer) -> None:
    content = content_of(ApprovedPayout("w-1", SCRIPT, AMOUNT_SAT))
    forged = {"kind": "withdrawal", "content": content, "decision": "approve", "totp": "123456"}
    assert "unknown or disabled" in signer.refused(
        "record_decision", wire.NOT_ALLOWED, staff_id="id-mallory", **forged
    )
    signer.ok("disable_staff", staff_id="id-carol")  # tightening: at once, on one word
    forged["totp"] = signer.code("carol")  # even her right code
    signer.refused("record_decision", wire.NOT_ALLOWED, staff_id="id-carol", **forged)
    forged["totp"] = signer.code("olga")
    assert "only approvers" in signer.refused(
        "record_decision", wire.NOT_ALLOWED, staff_id="id-olga", **forged
    )
    assert signer.runtime.signer.status()["records"] > 0
    assert content_digest(content) not in _decided_digests(signer)


def test_a_wrong_code_and_a_replayed_code_are_refused(signer: Signer) -> None:
    content = content_of(ApprovedPayout("w-2", SCRIPT, AMOUNT_SAT))
    params = {"staff_id": "id-alice", "kind": "withdrawal", "content": content}
    right = signer.code("alice")
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    signer.refused("record_decision", wire.STEP_UP_FAILED, decision="approve", totp=wrong, **params)
    # The code of a step accepted once (here by a login's check) never serves again.
    signer.moment -= timedelta(seconds=30)
    assert signer.ok("check_totp", staff_id="id-alice", code=right)["step"] > 0
    signer.refused("record_decision", wire.TOTP_REPLAYED, decision="approve", totp=right, **params)
    assert content_digest(content) not in _decided_digests(signer)


def test_the_signer_hashes_the_content_itself_and_checks_its_kind(signer: Signer) -> None:
    content = content_of(ApprovedPayout("w-3", SCRIPT, AMOUNT_SAT))
    signer.refused(
        "record_decision",
        wire.INVALID_REQUEST,
        staff_id="id-alice",
        kind="policy_change",  # a withdrawal's content passed off as another kind
        content=content,
        decision="approve",
        totp=signer.code("alice"),
    )
    # A digest in the request is not the signer's business: it answers its own.
    digest = signer.decide("alice", content)
    assert digest == content_digest(content)
    # The same decision again (the service lost its commit) is answered as recorded, and
    # adds nothing; the other decision is refused.
    again = {"kind": "withdrawal", "content": content, "decision": "approve"}
    repeated = signer.ok("record_decision", staff_id="id-alice", totp="000000", **again)
    assert repeated == {"digest": digest, "step": None, "already_recorded": True}
    assert len(_core(signer).state.evidence.decisions[digest]) == 1
    again["decision"] = "reject"
    signer.refused(
        "record_decision", wire.CONFLICT, staff_id="id-alice", totp=signer.code("alice"), **again
    )


def test_staff_enrolment_after_genesis_needs_a_quorum_recorded_in_the_signer(
    signer: Signer,
) -> None:
    mallory = {"staff_id": "id-mallory", "username": "mallory", "role": "approver"}
    mallory["groups"] = ["treasury"]  # type: ignore[assignment]
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **mallory)
    signer.refused("enrol_staff", wire.NOT_ALLOWED, totp_secret=pyotp.random_base32(), **mallory)
    change = {"kind": "staff_change", "action": "enrol", **mallory}
    signer.decide("alice", change)
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **mallory)
    signer.decide("bob", change)  # policy_change: 2 of treasury
    assert signer.ok("enrol_staff", **mallory)["totp_secret"]
    # Asking again is a change of an enrolled member: its own content, its own quorum.
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **mallory)
    update = {**change, "action": "update"}
    signer.decide("alice", update)
    signer.decide("carol", update)
    assert "totp_secret" not in signer.ok("enrol_staff", **mallory)  # the secret stays
    # The same evidence never serves twice.
    assert "used already" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **mallory)


def test_taking_power_away_from_a_member_needs_no_quorum(signer: Signer) -> None:
    """Fewer groups, or an approver's role given up, applies at once on one word (as
    disabling); more power, or no change at all, needs its quorum."""
    carol: dict[str, Any] = {"staff_id": "id-carol", "username": "carol"}
    wider = {"role": "approver", "groups": ["ops", "treasury"]}
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **wider, **carol)
    same = {"role": "approver", "groups": ["treasury"]}
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **same, **carol)
    renamed = {**carol, "username": "mallory", "role": "approver", "groups": []}
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **renamed)
    assert "totp_secret" not in signer.ok("enrol_staff", role="approver", groups=[], **carol)
    signer.ok("enrol_staff", role="operator", groups=[], **carol)
    content = content_of(ApprovedPayout("w-9", SCRIPT, AMOUNT_SAT))
    refused = signer.refused(
        "record_decision",
        wire.NOT_ALLOWED,
        staff_id="id-carol",
        kind="withdrawal",
        content=content,
        decision="approve",
        totp=signer.code("carol"),
    )
    assert "only approvers decide" in refused
    back = {"role": "approver", "groups": []}
    assert "genesis is closed" in signer.refused("enrol_staff", wire.NOT_ALLOWED, **back, **carol)


# --- payouts above a tier ------------------------------------------------------------------


def test_above_a_tier_without_enough_verified_approvals_nothing_is_signed(signer: Signer) -> None:
    payout, plan = above_tier(signer)
    content = content_of(payout)
    assert "no approval content" in signer.refused(
        "sign", wire.REFUSED, **sign_params(plan, payout, None)
    )
    signer.decide("alice", content)
    assert "holds 1 approval" in signer.refused(
        "sign", wire.REFUSED, **sign_params(plan, payout, content)
    )
    # Content the approvers did not see (another reference): another digest, no decisions.
    changed = content_of(payout, reference="round 82")
    signer.decide("bob", content)
    signer.refused("sign", wire.REFUSED, **sign_params(plan, payout, changed))
    # Content that names another payout than the one signed is refused before hashing.
    for other in (
        content_of(payout, amount_sat=AMOUNT_SAT - 1),
        content_of(payout, withdrawal_id="w-other"),
        content_of(payout, destination=external_destination("thief")[0]),
    ):
        assert "does not name this payout" in signer.refused(
            "sign", wire.REFUSED, **sign_params(plan, payout, other)
        )
    # A rejection by an eligible approver voids the quorum.
    signer.decide("carol", content, decision="reject")
    signer.refused("sign", wire.REFUSED, **sign_params(plan, payout, content))
    assert signed_count(signer) == 0


def test_a_disabled_approvers_decision_stops_counting(signer: Signer) -> None:
    payout, plan = above_tier(signer)
    content = content_of(payout)
    signer.decide("alice", content)
    signer.decide("bob", content)
    signer.ok("disable_staff", staff_id="id-bob")
    signer.refused("sign", wire.REFUSED, **sign_params(plan, payout, content))
    assert signed_count(signer) == 0


def test_with_a_real_quorum_the_payout_is_signed(signer: Signer) -> None:
    payout, plan = above_tier(signer)
    content = content_of(payout)
    signer.decide("alice", content)
    signer.decide("carol", content)
    result = signer.ok("sign", **sign_params(plan, payout, content))
    assert result["txid"] and signed_count(signer) == 1


def test_below_the_tier_no_approval_is_needed(signer: Signer) -> None:
    payout = ApprovedPayout("w-small", SCRIPT, TIER_SAT)
    plan = plan_paying(signer.runtime, [payout], using=coins(signer.runtime)[:1])
    assert signer.ok("sign", **sign_params(plan, payout, None))["txid"]


def test_no_totp_secret_reaches_the_signers_ledger_in_clear(signer: Signer) -> None:
    ledger = (signer.runtime.settings.signer_path / "ledger.jsonl").read_text()
    for secret in signer.secrets.values():
        assert secret not in ledger and secret.lower() not in ledger.lower()
    assert "sealed_totp" in ledger


def _core(s: Signer) -> Any:
    from tests.conftest import RUNNING_SIGNERS

    return RUNNING_SIGNERS[s.runtime.settings.signer_path].core


def _decided_digests(s: Signer) -> set[str]:
    return set(_core(s).state.evidence.decisions)


def test_canonical_content_is_what_travels() -> None:
    payout = ApprovedPayout("w-wire", SCRIPT, AMOUNT_SAT, canonical_json({"b": 1, "a": 2}).decode())
    plan = TransactionPlan((), (), 0, 0, 2, 0, 1)
    assert wire.unpack_batch(wire.pack_batch(plan, [payout]))[1] == [payout]
    packed = wire.pack_batch(plan, [replace(payout, approval='{"b":1, "a":2}')])
    with pytest.raises(wire.WireError, match="canonical"):
        wire.unpack_batch(packed)  # one content, one encoding: the batch's bytes stay canonical
