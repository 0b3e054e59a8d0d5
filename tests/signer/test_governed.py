"""Governed changes reach the signer only with quorum evidence it counts itself.

An attacker with the API process speaks to the signer's socket directly (``runtime.signer``
is the real client over the real Unix socket): a forged policy, a loosening without quorum
or before its time lock, an allowlist entry, a cold swap, an unfreeze or a key rotation
without evidence are refused; with the quorum in the signer's ledger they apply, and a
tightening applies at once. The signer's clock is injected (no sleeping for time locks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from embit import bip32
from embit.networks import NETWORKS

from tests.conftest import REPO, RUNNING_SIGNERS, WALLET
from tests.helpers import external_destination, run_cli
from tests.signer.helpers import coins, funded_api_host, plan_paying
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.canonical import content_digest
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.transaction import ApprovedPayout
from walletsvc.policy.document import PolicyDocument, canonical_dict, load_policy_yaml, policy_hash
from walletsvc.signer.core import SignerCore
from walletsvc.signer.evidence import DECISION, STAFF

REGTEST = NETWORKS["regtest"]
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY_TEXT = (
    (REPO / "policies" / "default.yaml")
    .read_text()
    .replace("required: false", "required: true")
    .replace("on_missing: require_approval", "on_missing: deny")
)


class Clock:
    """The signer's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api_host(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Runtime]:
    """A funded service whose signer requires the allowlist (unlisted destinations: deny)."""
    with funded_api_host(tmp_path, database_url, POLICY_TEXT, clock=clock) as runtime:
        yield runtime  # the test moves the signer's time itself


def core_of(runtime: Runtime) -> SignerCore:
    return RUNNING_SIGNERS[runtime.settings.signer_path].core


def approve_in_signer(
    runtime: Runtime, kind: str, content: dict[str, Any], approvers: int = 2
) -> None:
    """Stand-in for the sigev ops (enrol_staff, check_totp, record_decision): append
    ``staff`` and verified ``decision`` records to the signer's real ledger directly, as the
    signer does after it checked each member's step-up itself. Decisions are the subject here;
    how they are verified is tested with those ops."""
    core = core_of(runtime)
    digest = content_digest(content)
    with core.lock:
        for i in range(approvers):
            staff_id = f"approver-{i}"
            if staff_id not in core.state.evidence.staff:
                body = {
                    "staff_id": staff_id,
                    "username": staff_id,
                    "role": "approver",
                    "groups": ["treasury"],
                    "sealed_totp": None,
                    "source": "test",
                }
                core.record(STAFF, body)
            decision = {
                "staff_id": staff_id,
                "kind": kind,
                "digest": digest,
                "decision": "approve",
                "proof": "totp",
            }
            core.record(DECISION, decision)


def governed(
    runtime: Runtime, kind: str, content: dict[str, Any], payload: Any = None
) -> dict[str, Any]:
    return runtime.signer.apply_governed(kind, content, payload)


def policy_content(old: PolicyDocument, new: PolicyDocument, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "policy_change",
        "proposal_id": "p-1",
        "wallet_id": None,
        "sha256": policy_hash(new),
        "document_sha256": policy_hash(new),
        "base_sha256": policy_hash(old),
        "direction": "loosen",
        "timelock_s": 172800,
        **extra,
    }


def active(runtime: Runtime) -> PolicyDocument:
    policy = core_of(runtime).state.policy
    assert policy is not None
    return policy


def pay(runtime: Runtime, withdrawal_id: str, script: bytes, amount_sat: int) -> None:
    paid = [ApprovedPayout(withdrawal_id, script, amount_sat)]
    plan = plan_paying(runtime, paid, using=coins(runtime)[:1])
    runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)


def allowlist_content(address: str, entry_id: str = "e-1") -> dict[str, Any]:
    return {
        "kind": "allowlist_add",
        "entry_id": entry_id,
        "wallet_id": "w-id",
        "wallet": WALLET,
        "address": address,
        "label": "exchange",
        "source": "treasury",
    }


# --- policy changes --------------------------------------------------------------------------


def test_a_loosening_needs_the_quorum_and_its_time_lock_on_the_signers_clock(
    api_host: Runtime, clock: Clock
) -> None:
    old = active(api_host)
    new = old.model_copy(update={"max_per_payout_sat": 60_000_000})
    content = policy_content(old, new)
    document = canonical_dict(new)

    with pytest.raises(SigningRefused, match="no quorum"):
        governed(api_host, "policy_change", content, document)
    approve_in_signer(api_host, "policy_change", content)
    clock.now += timedelta(hours=47, minutes=59)
    with pytest.raises(SigningRefused, match="time lock"):
        governed(api_host, "policy_change", content, document)
    assert active(api_host) == old

    clock.now += timedelta(minutes=1)
    answer = governed(api_host, "policy_change", content, document)
    assert answer == {"applied": True, "direction": "loosen", "policy_hash": policy_hash(new)}
    assert api_host.signer.status()["policy_hash"] == policy_hash(new)


def test_a_forged_document_or_a_stale_base_is_refused_even_with_a_quorum(
    api_host: Runtime, clock: Clock
) -> None:
    old = active(api_host)
    approved = old.model_copy(update={"max_per_payout_sat": 60_000_000})
    forged = old.model_copy(update={"max_per_payout_sat": 5_000_000_000})
    content = policy_content(old, approved)
    approve_in_signer(api_host, "policy_change", content)
    clock.now += timedelta(days=3)
    with pytest.raises(SigningRefused, match="does not hash"):
        governed(api_host, "policy_change", content, canonical_dict(forged))

    other_base = policy_content(forged, approved)
    approve_in_signer(api_host, "policy_change", other_base)
    clock.now += timedelta(days=3)
    with pytest.raises(SigningRefused, match="assessed against policy"):
        governed(api_host, "policy_change", other_base, canonical_dict(approved))
    assert active(api_host) == old


def test_a_tightening_applies_at_once_and_the_signer_judges_the_direction_itself(
    api_host: Runtime,
) -> None:
    old = active(api_host)
    tighter = old.model_copy(update={"max_per_payout_sat": 1_000_000})
    # The request calls it a tightening either way; the signer's own ratchet decides.
    answer = governed(
        api_host,
        "policy_change",
        policy_content(old, tighter, direction="tighten"),
        canonical_dict(tighter),
    )
    assert answer["applied"] is True and answer["direction"] == "tighten"
    assert active(api_host) == tighter

    looser = tighter.model_copy(update={"max_per_payout_sat": 900_000_000})
    with pytest.raises(SigningRefused, match="no quorum"):
        governed(
            api_host,
            "policy_change",
            policy_content(tighter, looser, direction="tighten"),
            canonical_dict(looser),
        )
    assert active(api_host) == tighter


def test_a_wallet_policy_is_the_signers_copy_for_that_wallet_only(api_host: Runtime) -> None:
    old = active(api_host)
    own = load_policy_yaml(f"wallet: {WALLET}\n" + POLICY_TEXT)
    tighter = own.model_copy(update={"max_per_payout_sat": 1_000_000})
    # A first wallet policy equal to the default but for its name is "unchanged" in rules:
    # the ratchet reads it as a change it cannot assess, a loosening: quorum needed.
    with pytest.raises(SigningRefused, match="no quorum"):
        governed(api_host, "policy_change", policy_content(old, tighter), canonical_dict(tighter))
    core = core_of(api_host)
    assert core.state.policy_for(WALLET) == old and core.state.wallet_policies == {}


def test_an_approved_wallet_policy_governs_that_wallet_only(
    api_host: Runtime, clock: Clock
) -> None:
    old = active(api_host)
    own = load_policy_yaml(f"wallet: {WALLET}\n" + POLICY_TEXT)
    tighter = own.model_copy(update={"max_per_payout_sat": 1_000_000})
    content = policy_content(old, tighter)
    approve_in_signer(api_host, "policy_change", content)
    clock.now += timedelta(hours=48)
    governed(api_host, "policy_change", content, canonical_dict(tighter))
    status = api_host.signer.status()
    assert status["wallet_policies"] == {WALLET: policy_hash(tighter)}
    assert status["policy_hash"] == policy_hash(old)  # the default copy is unchanged
    # The wallet's own copy is the one the signer judges its payouts by.
    address, script = external_destination("listed for the wallet policy")
    listing = allowlist_content(address)
    approve_in_signer(api_host, "allowlist_add", listing)
    governed(api_host, "allowlist_add", listing)
    clock.now += timedelta(days=30)
    with pytest.raises(SigningRefused, match="max_per_payout"):
        pay(api_host, "w-1", script, 1_000_001)


# --- the allowlist ---------------------------------------------------------------------------


def test_an_allowlist_entry_needs_the_quorum_then_cools_off_in_the_signer(
    api_host: Runtime, clock: Clock
) -> None:
    address, script = external_destination("exchange hot wallet")
    with pytest.raises(SigningRefused, match="allowlist"):
        pay(api_host, "w-1", script, 1_000_000)

    content = allowlist_content(address)
    with pytest.raises(SigningRefused, match="no quorum"):
        governed(api_host, "allowlist_add", content)
    approve_in_signer(api_host, "allowlist_add", content)
    answer = governed(api_host, "allowlist_add", content)
    assert answer == {"applied": True, "active_since": START.isoformat()}

    clock.now += timedelta(hours=23)
    with pytest.raises(SigningRefused, match="cooling off"):
        pay(api_host, "w-2", script, 1_000_000)
    clock.now += timedelta(hours=1)
    # The trust ramp, from the signer's copy too: 0.05 BTC in the first day.
    with pytest.raises(SigningRefused, match="trust_ramp"):
        pay(api_host, "w-3", script, 5_000_001)
    pay(api_host, "w-4", script, 1_000_000)
    assert api_host.signer.status()["signed_transactions"] == 1


def test_an_allowlist_removal_applies_at_once_and_used_evidence_never_restores_it(
    api_host: Runtime, clock: Clock
) -> None:
    address, script = external_destination("old exchange")
    content = allowlist_content(address)
    approve_in_signer(api_host, "allowlist_add", content)
    governed(api_host, "allowlist_add", content)
    clock.now += timedelta(days=2)

    removal = {"kind": "allowlist_remove", "entry_id": "e-1", "wallet": WALLET, "address": address}
    assert governed(api_host, "allowlist_remove", removal) == {"applied": True}
    with pytest.raises(SigningRefused, match="not on the allowlist"):
        pay(api_host, "w-1", script, 1_000_000)
    # The API host replays the approved addition: evidence is used once.
    assert governed(api_host, "allowlist_add", content) == {"applied": False, "already": True}
    with pytest.raises(SigningRefused, match="not on the allowlist"):
        pay(api_host, "w-2", script, 1_000_000)


# --- cold destination, unfreeze, rotation ----------------------------------------------------


def tpub_text(tag: str) -> str:
    root = bip32.HDKey.from_seed(hashlib.sha256(tag.encode()).digest(), version=REGTEST["xprv"])
    return str(root.derive("m/84h/1h/0h").to_public().to_base58(REGTEST["xpub"]))


def test_a_cold_swap_needs_the_quorum(api_host: Runtime) -> None:
    content = {
        "kind": "cold_destination_change",
        "change_id": "c-1",
        "wallet": WALLET,
        "destination_kind": "xpub",
        "descriptor": tpub_text("attacker cold"),
        "fingerprint": "f",
        "replaces_fingerprint": None,
        "reason": None,
    }
    with pytest.raises(SigningRefused, match="no quorum"):
        governed(api_host, "cold_destination_change", content)
    assert api_host.signer.status()["cold"] == {}

    approve_in_signer(api_host, "cold_destination_change", content)
    answer = governed(api_host, "cold_destination_change", content)
    assert api_host.signer.status()["cold"] == {WALLET: answer["descriptor"]}


def unfreeze_content(wallet: str | None) -> dict[str, Any]:
    return {
        "kind": "unfreeze",
        "unfreeze_request_id": "u-1",
        "reason": "false alarm",
        "freezes": [
            {"id": "f-1", "scope": "all", "wallet_id": None, "wallet": wallet, "reason": "x"}
        ],
    }


def test_an_unfreeze_needs_the_quorum_and_never_lifts_a_later_freeze(
    api_host: Runtime, clock: Clock
) -> None:
    api_host.signer.freeze(WALLET, "incident")
    with pytest.raises(SigningRefused, match="quorum evidence"):
        api_host.signer.call("unfreeze", {"wallet": WALLET})
    content = unfreeze_content(WALLET)
    payload = {"wallets": [WALLET]}
    with pytest.raises(SigningRefused, match="no quorum"):
        governed(api_host, "unfreeze", content, payload)
    with pytest.raises(SigningRefused, match="do not cover"):
        governed(api_host, "unfreeze", content, {"wallets": [None]})
    assert api_host.signer.status()["frozen"] == {WALLET: "incident"}

    clock.now += timedelta(minutes=1)
    approve_in_signer(api_host, "unfreeze", content, approvers=1)
    clock.now += timedelta(minutes=1)
    api_host.signer.freeze(WALLET, "a risk rule fired during the review")
    approve_in_signer(api_host, "unfreeze", content, approvers=2)
    with pytest.raises(SigningRefused, match="frozen again"):
        governed(api_host, "unfreeze", content, payload)
    assert WALLET in api_host.signer.status()["frozen"]

    fresh = unfreeze_content(WALLET) | {"unfreeze_request_id": "u-2"}
    approve_in_signer(api_host, "unfreeze", fresh)
    assert governed(api_host, "unfreeze", fresh, payload)["frozen"] == {}


def test_a_new_key_epoch_needs_an_approved_rotation(api_host: Runtime) -> None:
    with pytest.raises(SigningRefused, match="approved key rotation"):
        api_host.signer.new_epoch(WALLET, 2)
    content = {
        "kind": "key_rotation",
        "rotation_id": "r-1",
        "wallet_id": "w-id",
        "wallet": WALLET,
        "from_epoch": 1,
        "reason": "laptop lost",
    }
    with pytest.raises(SigningRefused, match="no quorum"):
        api_host.signer.rotate_epoch(content)
    approve_in_signer(api_host, "key_rotation", content)
    keys = api_host.signer.rotate_epoch(content)
    assert keys.epoch == 2 and api_host.signer.status()["wallets"] == {WALLET: [1, 2]}
    # A crash-retry gets the same epoch; the evidence makes no third one.
    assert api_host.signer.rotate_epoch(content) == keys
    assert api_host.signer.new_epoch(WALLET, 2) == keys
    with pytest.raises(SigningRefused, match="approved key rotation"):
        api_host.signer.new_epoch(WALLET, 3)


def test_walletsvc_signer_status_shows_the_signers_copies(api_host: Runtime) -> None:
    address, _ = external_destination("shown by status")
    content = allowlist_content(address)
    approve_in_signer(api_host, "allowlist_add", content)
    governed(api_host, "allowlist_add", content)
    done = run_cli(api_host.settings, "signer", "status")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["allowlist"] == {WALLET: [{"address": address, "active_since": START.isoformat()}]}
    assert shown["policy_hash"] == policy_hash(active(api_host))
    assert shown["wallet_policies"] == {}
