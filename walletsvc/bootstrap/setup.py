"""`walletsvc init` and the idempotent dev bootstrap behind `make run`."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from walletsvc.bootstrap.runtime import Runtime, open_database
from walletsvc.bootstrap.seed_import import SeedImporter
from walletsvc.bootstrap.staff_import import TotpImporter
from walletsvc.config import Settings
from walletsvc.db.migrate import upgrade
from walletsvc.domain.access import SCOPES
from walletsvc.domain.address import p2wpkh_script, script_to_address
from walletsvc.domain.errors import DomainError, InvalidInput
from walletsvc.domain.network import Network
from walletsvc.domain.ports import ChainBackend
from walletsvc.governance.policies import active_policy, install_policy
from walletsvc.governance.staff import create_staff
from walletsvc.governance.tokens import authenticate_token, create_token
from walletsvc.keys.descriptor import ColdDestination, parse_cold_destination
from walletsvc.keys.integrity import RowTagger
from walletsvc.keys.kek import create_dev_kek, load_kek
from walletsvc.policy.document import load_policy_yaml
from walletsvc.signer.client import SignerClient
from walletsvc.treasury.cold import cold_view, set_initial_cold_destination
from walletsvc.wallets.service import NewWallet, create_wallet, current_address, get_wallet

DEV_TOKEN_SCOPES = sorted(SCOPES - {"allowlist:propose"})
DEV_FUNDING_BLOCKS = 110  # 10 mature coinbase outputs once the chain is 100 blocks deeper


class MiningChain(ChainBackend, Protocol):
    """A development chain that mines on demand (walletsvc.devchain's embedded chain)."""

    def mine(self, n: int, to_script_pubkey: bytes | None = None) -> list[str]: ...


@dataclass(frozen=True)
class InitResult:
    kek_created: bool
    wallet: NewWallet | None
    cold: ColdDestination | None = None


def initialise(
    settings: Settings,
    *,
    wallet: str,
    policy_file: Path,
    actor: str,
    cold_destination: str | None = None,
    progress: Callable[[str], None] = lambda _step: None,
) -> InitResult:
    """``cold_destination``: an account xpub/zpub or a wpkh/wsh(sortedmulti) descriptor;
    a restore from recovery words imports them into the signer first (on the signer's host:
    ``walletsvc restore --words``), and the wallet made here takes that epoch's keys.
    ``progress`` is told each step as it starts (the CLI prints them)."""
    progress(f"data directory {settings.data_dir}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kek_created = False
    if not settings.kek_path.exists():
        if settings.network is not Network.REGTEST:
            raise DomainError(
                f"no key-encryption key at {settings.kek_path}: provision 32 random bytes there "
                "(mode 0600) before init on a real network"
            )
        create_dev_kek(settings.kek_path)
        kek_created = True
    kek = load_kek(settings.kek_path)
    progress("database schema (migrations)")
    importer = TotpImporter(settings)  # staff secrets of an older database go to the signer
    seeds = SeedImporter(settings)  # and so do the seeds of its wallets (KEK ciphertexts)
    try:
        upgrade(settings.database_url, totp_import=importer, seed_import=seeds)
    finally:
        importer.close()
        seeds.close()
    db = open_database(settings)
    tags = kek.row_tagger()
    try:
        progress("first policy")
        _install_first_policy(db, tags, policy_file, actor)
        with db.read() as uow:
            exists = uow.wallets.by_name(wallet) is not None
        if not exists:
            progress(f"wallet {wallet}: seed, keys and first addresses")
        signer = SignerClient(settings)
        try:
            new = (
                None
                if exists
                else create_wallet(db, signer, name=wallet, network=settings.network, actor=actor)
            )
        finally:
            signer.close()
        if cold_destination:
            progress("cold destination")
        cold = _set_cold(db, tags, wallet, cold_destination, actor) if cold_destination else None
    finally:
        db.dispose()
    return InitResult(kek_created, new, cold)


def _set_cold(db: Any, tags: RowTagger, wallet: str, text: str, actor: str) -> ColdDestination:
    """Set the wallet's first cold destination; re-running init with the same one is a no-op."""
    with db.read() as uow:
        w = get_wallet(uow, wallet)
        current = cold_view(uow, w)
    if current is not None:
        parsed = parse_cold_destination(text, Network(w.network))
        if parsed.fingerprint == current["fingerprint"]:
            return parsed
    return set_initial_cold_destination(db, tags, wallet=wallet, text=text, actor=actor)


def _install_first_policy(db: Any, tags: RowTagger, policy_file: Path, actor: str) -> None:
    with db.read() as uow:
        if uow.policies.any():
            return
    try:
        document = load_policy_yaml(policy_file.read_text())
    except FileNotFoundError as exc:
        raise InvalidInput(f"policy file {policy_file} not found", field="policy") from exc
    with db.write() as uow:
        install_policy(uow, tags, document, wallet_id=None, actor=actor)


def demo_destination(network: Network) -> str:
    """A stand-in miner address for the newcomer's first payout (not ours; regtest only)."""
    key_hash = hashlib.new("ripemd160", hashlib.sha256(b"walletsvc demo miner").digest()).digest()
    return script_to_address(p2wpkh_script(key_hash), network)


class DevCredentials(NamedTuple):
    """What ``dev-credentials.json`` holds, and whether this run created its API token (the
    only time the token is shown; afterwards it is read from the file)."""

    values: dict[str, Any]
    token_created: bool


def dev_bootstrap(
    settings: Settings, chain: MiningChain, *, wallet: str, actor: str
) -> DevCredentials:
    """Init, fund the wallet with mined coins, a token and credentials (the runtime closes
    ``chain`` when it is done)."""
    initialise(settings, wallet=wallet, policy_file=settings.policy_file, actor=actor)
    runtime = Runtime.open(settings, chain=chain)
    try:
        with runtime.db.read() as uow:
            address = current_address(uow, get_wallet(uow, wallet))
        if chain.tip().height < DEV_FUNDING_BLOCKS:
            chain.mine(DEV_FUNDING_BLOCKS, bytes.fromhex(address.script_pubkey))
        runtime.scanner.sync()
        creds = _dev_credentials(settings, runtime, wallet)
        if "staff" not in creds.values:
            creds.values["staff"] = _dev_staff(runtime)
            _write_private(settings.data_dir / "dev-credentials.json", creds.values)
            # The dev approvers are the whole staff: enrolling anyone else now needs their
            # quorum, recorded in the signer (docs/runbook.md, "Genesis").
            runtime.signer.close_genesis()
    finally:
        runtime.close()
    return creds


# Two approvers (a payout above the first tier needs two) and an operator for the console.
DEV_STAFF = (("alice", "approver"), ("bob", "approver"), ("olga", "operator"))


def _dev_staff(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Dev staff a person can log in with: their passwords and TOTP secrets go into the
    credentials file (mode 0600, development only; `walletsvc dev totp NAME` prints a code)."""
    with runtime.db.read() as uow:
        document = active_policy(uow, runtime.tags, None).document
        taken = {row.username for row in uow.staff.all_by_username()}
    group = (
        document.approval_tiers[0].group
        if document.approval_tiers
        else document.quorum_for("unfreeze").group
    )
    staff: dict[str, dict[str, Any]] = {}
    for username, role in DEV_STAFF:
        if username in taken:
            continue  # made by hand already: not ours to overwrite
        password = secrets.token_urlsafe(12)
        created = create_staff(
            runtime.db,
            runtime.tags,
            runtime.signer,
            username=username,
            password=password,
            role=role,
            groups=[group] if role == "approver" else [],
            actor="dev",
        )
        staff[username] = {
            "role": role,
            "groups": created.groups,
            "password": password,
            "totp_secret": created.totp_secret,
            "otpauth_uri": created.otpauth_uri,
        }
    return staff


def _dev_credentials(settings: Settings, runtime: Runtime, wallet: str) -> DevCredentials:
    path = settings.data_dir / "dev-credentials.json"
    base_url = f"http://{settings.host}:{settings.port}"
    if path.exists():
        creds: dict[str, Any] = json.loads(path.read_text())
        try:
            # Checked without auditing: a dev token from before token tags is replaced, not
            # reported as an integrity failure (which would freeze the dev wallets).
            with runtime.db.read() as uow:
                authenticate_token(uow, runtime.tags, creds["api_token"])
            creds["base_url"] = base_url
            _write_private(path, creds)
            return DevCredentials(creds, token_created=False)
        except (DomainError, KeyError):
            pass
    token = create_token(
        runtime.db, runtime.tags, name="dev-payout-engine", scopes=DEV_TOKEN_SCOPES, actor="dev"
    )
    creds = {
        "api_token": token.secret,
        "wallet": wallet,
        "base_url": base_url,
        "demo_destination": demo_destination(settings.network),
    }
    _write_private(path, creds)
    return DevCredentials(creds, token_created=True)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
