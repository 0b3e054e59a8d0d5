"""Helpers for tests that need the signer's own files (a thief who stole them, a tamperer)."""

from __future__ import annotations

from collections.abc import Sequence

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.config import Settings
from walletsvc.domain.transaction import ApprovedPayout, SignedTransaction, TransactionPlan
from walletsvc.keys.descriptor import ColdDestination
from walletsvc.keys.keystore import EncryptedSeed
from walletsvc.keys.signer import HotSigner
from walletsvc.policy.document import PolicyDocument
from walletsvc.signer.ledger import Ledger
from walletsvc.signer.server import (
    KEY_FILE,
    LEDGER_FILE,
    LEDGER_MAC,
    close_core,
    load_signer_key,
    open_core,
)
from walletsvc.signer.state import SignerState


def sign_with_stolen_files(
    settings: Settings,
    wallet: str,
    plan: TransactionPlan,
    *,
    approved: Sequence[ApprovedPayout] = (),
    sweep_scripts: frozenset[bytes] = frozenset(),
    max_fee_sat: int | None = None,
) -> SignedTransaction:
    """Sign as someone who copied the signer's key and ledger: no rules, no record."""
    assert (settings.signer_path / KEY_FILE).exists()
    key = load_signer_key(settings)
    state = SignerState()
    for record in Ledger.open(settings.signer_path / LEDGER_FILE, key.subkey(LEDGER_MAC)):
        state.apply(record)
    seeds = {
        epoch: EncryptedSeed.from_string(entry.sealed)
        for (name, epoch), entry in state.seeds.items()
        if name == wallet
    }
    return HotSigner(key.seed_vault(), KernelScriptVerifier()).sign(
        wallet=wallet,
        network=settings.network,
        seeds=seeds,
        plan=plan,
        approved=approved,
        sweep_scripts=sweep_scripts,
        max_fee_sat=settings.max_fee_sat if max_fee_sat is None else max_fee_sat,
    )


def install_cold_in_signer(settings: Settings, wallet: str, text: str) -> ColdDestination:
    """The signer operator's local step (walletsvc signer set-cold), on the running
    in-process signer of the fixtures or, when none runs, on its files."""
    from tests.conftest import RUNNING_SIGNERS

    running = RUNNING_SIGNERS.get(settings.signer_path)
    if running is not None:
        with running.core.lock:
            return running.core.install_cold(wallet, text)
    core = open_core(settings)
    try:
        return core.install_cold(wallet, text)
    finally:
        close_core(core)


def install_policy_in_signer(settings: Settings, policy: PolicyDocument) -> None:
    """The signer operator's local step (walletsvc signer set-policy), as install_cold_in_signer."""
    from tests.conftest import RUNNING_SIGNERS

    running = RUNNING_SIGNERS.get(settings.signer_path)
    if running is not None:
        with running.core.lock:
            running.core.install_policy(policy)
            return
    core = open_core(settings)
    try:
        core.install_policy(policy)
    finally:
        close_core(core)


def use_relying_party(settings: Settings, rp_id: str, origin: str) -> None:
    """The signer operator's setting of the console origin its passkeys belong to
    (``WALLETSVC_CONSOLE_ORIGIN`` on the signer's side), on the running in-process signer:
    TestClient's pages come from http://testserver, a live server from its own port."""
    from dataclasses import replace

    from tests.conftest import RUNNING_SIGNERS
    from walletsvc.keys.passkeys import RelyingParty

    core = RUNNING_SIGNERS[settings.signer_path].core
    with core.lock:
        core.people.config = replace(
            core.people.config, relying_party=RelyingParty(rp_id=rp_id, origin=origin)
        )
