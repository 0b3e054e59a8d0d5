"""Disaster recovery: ``walletsvc backup``, ``walletsvc restore`` and the restore from the
recovery words alone (docs/runbook.md, "Backup and restore").

A backup directory holds:
  * the database (walletsvc.db.backup: SQLite's backup API, pg_dump, or a JSON export);
  * the key files of the data directory as they are, sealed: every regular file of
    ``WALLETSVC_DATA_DIR`` (a ``signer/`` subdirectory included) except the database itself
    and the development chain. The seeds are in the database, encrypted under the KEK; the KEK
    is in the backup only when it sits in the data directory (development): production keeps
    ``WALLETSVC_KEK_FILE`` elsewhere, and a restore needs it provisioned there again;
  * ``manifest.json``: what was written, each file's SHA-256, the schema revision and the
    network. A restore refuses a backup whose files do not match it.

A restore goes onto a fresh data directory and an empty database only: it never merges.

The recovery words alone rebuild a wallet without any backup: the seed is imported (its
epoch's addresses derive again), and the chain is scanned from ``scan_start_height``, which
finds every coin of those addresses. Payouts, approvals, staff and the audit log are not in
the words: they need the database backup.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import InitResult, initialise
from walletsvc.config import Settings
from walletsvc.db import backup as db_backup
from walletsvc.db.migrate import upgrade
from walletsvc.domain.errors import Conflict, InvalidInput
from walletsvc.domain.ports import ChainBackend

Progress = Callable[[str], None]
MANIFEST = "manifest.json"
FORMAT = 1
KEYS_DIR = "keys"
_NOT_KEYS = ("chain",)  # the development chain: re-synced, never restored from a backup
_SCAN_STEP = 500  # blocks per scanner pass while rescanning (one progress line each)


def _quiet(_: str) -> None:
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key_files(settings: Settings) -> list[Path]:
    """The data directory's files to keep, relative to it: all but the database and chain."""
    root = settings.data_dir
    if not root.exists():
        return []
    database = db_backup.sqlite_path(settings.database_url)
    skip = set()
    if database is not None:
        skip = {database.resolve(), *(Path(f"{database.resolve()}{s}") for s in ("-wal", "-shm"))}
        skip.add(Path(f"{database.resolve()}-journal"))
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in _NOT_KEYS or not path.is_file() or path.resolve() in skip:
            continue
        found.append(relative)
    return found


def backup(
    settings: Settings, destination: Path, *, fmt: str | None = None, progress: Progress = _quiet
) -> dict[str, Any]:
    """Write a backup of ``settings``' database and key files into ``destination`` (new)."""
    if destination.exists() and any(destination.iterdir()):
        raise Conflict(f"{destination} is not empty: back up into a new directory", field="to")
    destination.mkdir(parents=True, exist_ok=True)
    destination.chmod(0o700)  # ciphertexts and tags: readable by the operator only
    revision = db_backup.schema_revision(settings.database_url)
    if revision is None:
        raise InvalidInput("the database has no schema: nothing to back up", field="database")
    database_file = db_backup.dump(settings.database_url, destination, fmt=fmt, progress=progress)
    files = []
    for relative in _key_files(settings):
        target = destination / KEYS_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(settings.data_dir / relative, target)
        files.append({"path": str(relative), "sha256": _sha256(target)})
        progress(f"key file: {relative}")
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "network": settings.network.value,
        "schema_revision": revision,
        "database": {"file": database_file, "sha256": _sha256(destination / database_file)},
        "key_files": files,
        "kek_included": any(
            (settings.data_dir / f["path"]).resolve() == settings.kek_path.resolve() for f in files
        ),
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    progress(f"backup written to {destination}")
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of ``source``, every file checked against it."""
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        raise InvalidInput(f"{source} has no readable {MANIFEST}", field="from") from None
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"unknown backup format {manifest.get('format')!r}", field="from")
    database = manifest["database"]
    checks = [(source / database["file"], database["sha256"])]
    checks += [(source / KEYS_DIR / f["path"], f["sha256"]) for f in manifest["key_files"]]
    for path, expected in checks:
        if not path.is_file() or _sha256(path) != expected:
            raise Conflict(f"{path} is missing or does not match the manifest", field="from")
    return manifest


def restore(settings: Settings, source: Path, *, progress: Progress = _quiet) -> dict[str, Any]:
    """Restore a backup onto ``settings``' fresh data directory and empty database."""
    manifest = read_manifest(source)
    if manifest["network"] != settings.network.value:
        raise Conflict(
            f"the backup is of {manifest['network']}, these settings are {settings.network.value}",
            field="network",
        )
    targets = [settings.data_dir / f["path"] for f in manifest["key_files"]]
    present = [str(t) for t in targets if t.exists()]
    if present:
        raise Conflict(f"restore onto a fresh data directory: {present[0]} exists", field="to")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_backup.load(settings.database_url, source, manifest["database"]["file"], progress=progress)
    upgrade(settings.database_url)  # a backup of an older revision is migrated forward
    for entry, target in zip(manifest["key_files"], targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / KEYS_DIR / entry["path"], target)
        progress(f"key file: {entry['path']}")
    if not settings.kek_path.exists():
        progress(
            f"no key-encryption key at {settings.kek_path}: provision WALLETSVC_KEK_FILE "
            "before starting the service (it is never in a production backup)"
        )
    progress("restore done")
    return manifest


def restore_from_words(
    settings: Settings,
    *,
    wallet: str,
    chain: ChainBackend,
    cold_destination: str | None = None,
    progress: Progress = _quiet,
) -> InitResult:
    """A wallet rebuilt from its recovery words (key epoch 1) and a rescan of the chain.

    The words go into the signer first, on the signer's host (``walletsvc restore --words``
    imports them into its ledger: the service never sees seed words); the wallet made here
    takes the keys the signer then holds for epoch 1. Takes ownership of ``chain`` (closed
    with the runtime)."""
    result = initialise(
        settings,
        wallet=wallet,
        policy_file=settings.policy_file,
        actor="cli:restore",
        cold_destination=cold_destination,
    )
    if result.wallet is None:
        chain.close()
        raise Conflict(
            f"wallet {wallet!r} exists already: restore onto a fresh one", field="wallet"
        )
    runtime = Runtime.open(settings, chain=chain)
    try:
        tip = runtime.chain.tip().height
        while True:
            report = runtime.scanner.sync(max_blocks=_SCAN_STEP)
            with runtime.db.read() as uow:
                scanned = uow.scanned_blocks.tip_height()
            progress(f"rescan: block {scanned} of {tip}")
            if report.blocks_scanned == 0 or scanned >= tip:
                break
    finally:
        runtime.close()
    return result
