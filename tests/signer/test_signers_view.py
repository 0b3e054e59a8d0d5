"""What the signer judges of a policy: the rules it can check from what it holds."""

from __future__ import annotations

from tests.conftest import REPO
from walletsvc.policy.document import load_policy_yaml
from walletsvc.signer.core import signers_view


def test_the_signer_keeps_the_money_rules_and_drops_what_it_cannot_judge() -> None:
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("required: false", "required: true")
    text = text.replace("denylist: []", "denylist: [bcrt1qxyz]")
    policy = load_policy_yaml(text.replace("on_missing: require_approval", "on_missing: deny"))
    view = signers_view(policy)
    assert {v.id for v in view.velocity} == {"wallet-1h", "wallet-24h", "destination-24h"}
    assert view.max_per_payout_sat == policy.max_per_payout_sat == 50_000_000
    assert view.approval_tiers == policy.approval_tiers
    assert view.allowlist is not None and policy.allowlist is not None
    # The allowlist stays whole: the signer judges it from its own copy (signer/governed.py).
    assert view.allowlist == policy.allowlist and view.allowlist.required is True
    assert view.allowlist.denylist == policy.allowlist.denylist == ("bcrt1qxyz",)
