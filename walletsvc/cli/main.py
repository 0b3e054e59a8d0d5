"""The `walletsvc` command line (typer). A thin shell over the services."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from walletsvc.cli.conventions import operator_actor, use_plain_help
from walletsvc.cli.staff import staff_app
from walletsvc.cli.webhooks import webhook_app
from walletsvc.config import Settings
from walletsvc.domain.access import SCOPES
from walletsvc.domain.errors import DependencyUnavailable, DomainError
from walletsvc.domain.network import Network

if TYPE_CHECKING:
    from walletsvc.bootstrap.runtime import Runtime
    from walletsvc.domain.ports import ChainBackend
    from walletsvc.signer.core import SignerCore

use_plain_help()
app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="API tokens for machine clients.")
devchain_app = typer.Typer(no_args_is_help=True, help="The embedded regtest chain (dev only).")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
dev_app = typer.Typer(no_args_is_help=True, help="Developer conveniences used by `make run`.")
app.add_typer(token_app, name="token")
app.add_typer(devchain_app, name="devchain")
app.add_typer(audit_app, name="audit")
app.add_typer(dev_app, name="dev")
app.add_typer(staff_app, name="staff")
app.add_typer(webhook_app, name="webhook")

CLI_ACTOR = operator_actor()


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Settings keeps input values out of its errors, so the messages are safe to print.
        messages = (e["msg"].removeprefix("Value error, ") for e in exc.errors())
        typer.secho("invalid settings: " + "\n".join(messages), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def open_runtime(s: Settings) -> Runtime:
    """The runtime and its chain: Bitcoin Core (rpc) or, on the embedded default, the dev chain.

    The product never opens the dev chain itself; this edge composes it (walletsvc.devchain).
    """
    from walletsvc.bootstrap.runtime import Runtime

    if s.chain_backend != "embedded":
        return Runtime.open(s)
    from walletsvc.devchain.service import open_dev_chain

    return Runtime.open(s, chain=open_dev_chain(s))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def local_signer(s: Settings, *, refused: str = "") -> Iterator[SignerCore]:
    """The signer's own files opened in this process, for the local-only commands (set-up,
    restore, imports): the signer must be stopped (its lock says so). ``refused`` prefixes
    the message when they cannot be opened; they are closed again on the way out."""
    from walletsvc.signer.ledger import LedgerBroken
    from walletsvc.signer.server import SignerSetupError, close_core, open_core

    try:
        core = open_core(s)
    except (LedgerBroken, SignerSetupError) as exc:
        fail(f"{refused}{exc}")
    try:
        yield core
    finally:
        close_core(core)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """walletsvc: hot-wallet security and withdrawal control."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    from walletsvc.bootstrap.seed_import import SeedImporter
    from walletsvc.bootstrap.staff_import import TotpImporter
    from walletsvc.db.migrate import upgrade

    s = settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as signer_up:
        # An older database's secrets and seeds go to the signer: on the dev default `make
        # run` starts it for them, only when there are some (a fresh database needs none).
        started: list[bool] = []

        def start_signer() -> None:
            if not started:
                started.append(True)
                signer_up.enter_context(dev_signer(s))

        importer = TotpImporter(s, start_signer)  # 0016: staff TOTP secrets
        seeds = SeedImporter(s, start_signer)  # 0020: seeds of wallets made before the signer
        try:
            upgrade(s.database_url, totp_import=importer, seed_import=seeds)
        finally:
            importer.close()
            seeds.close()
    typer.echo(f"database at head: {_redact(s.database_url)}")


@app.command()
def init(
    wallet: Annotated[str, typer.Option(help="Name of the hot wallet to create")] = "pool-hot",
    policy: Annotated[Path | None, typer.Option(help="First policy document (YAML)")] = None,
    cold_xpub: Annotated[
        str | None, typer.Option(help="Cold storage: account xpub/zpub (tpub/vpub on test nets)")
    ] = None,
    cold_descriptor: Annotated[
        str | None,
        typer.Option(help="Cold storage: wsh(sortedmulti(M,KEY/0/*,...)) or wpkh(KEY/0/*)"),
    ] = None,
) -> None:
    """Create the data directory, keys and first policy; print the xpub and what to back up."""
    from walletsvc.bootstrap.setup import initialise

    if cold_xpub and cold_descriptor:
        fail("give --cold-xpub or --cold-descriptor, not both")
    s = settings()
    if cold_xpub or cold_descriptor:
        _cold_in_signer(s, wallet, cold_xpub or cold_descriptor or "")
    try:
        with dev_signer(s):
            result = initialise(
                s,
                wallet=wallet,
                policy_file=policy or s.policy_file,
                actor=CLI_ACTOR,
                cold_destination=cold_xpub or cold_descriptor,
                progress=lambda step: typer.echo(f"… {step}", err=True),
            )
    except DomainError as exc:
        fail(f"init failed: {exc.message}")
        return
    if result.cold is not None:
        typer.echo(f"cold destination:    {result.cold.kind.value}  {result.cold.descriptor}")
        typer.echo(f"cold fingerprint:    {result.cold.fingerprint}  (compare with your devices)")
    if result.kek_created:
        typer.secho(
            "WARNING: created a DEVELOPMENT key-encryption key at "
            f"{s.kek_path} (mode 0600). In production, provision WALLETSVC_KEK_FILE from a "
            "secrets manager or HSM-backed store, outside the database and its backups.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if result.wallet is None:
        typer.echo(f"wallet {wallet!r} exists already; nothing to do")
        return
    w = result.wallet
    typer.echo(f"wallet:              {w.name} ({w.network.value})")
    typer.echo(f"account xpub:        {w.account_xpub}")
    typer.echo(f"master fingerprint:  {w.master_fingerprint}")
    typer.echo(f"first deposit addr:  {w.first_address}")
    typer.echo("")
    typer.echo("BACK UP NOW, offline: the signer's directory (its key and ledger hold the seed)")
    typer.echo(f"  signer directory:             {s.signer_path}")
    typer.echo(f"  key-encryption key file:      {s.kek_path}")
    typer.echo("The database holds only the public keys; the seed never leaves the signer.")


def _cold_in_signer(s: Settings, wallet: str, text: str) -> None:
    """`init --cold-*` on the signer's host: the signer's own copy first (it must be stopped;
    on another host, run `walletsvc signer set-cold` there)."""
    if s.signer_tcp_host:
        typer.echo("the signer runs on another host: run `walletsvc signer set-cold` there too")
        return
    with local_signer(s, refused="cannot give the signer its cold destination: ") as core:
        try:
            core.install_cold(wallet, text)
        except DomainError as exc:
            fail(f"init failed: {exc.message}")


@app.command()
def sweep(
    wallet: Annotated[
        str, typer.Option(help="Wallet to sweep down to its hot target")
    ] = "pool-hot",
) -> None:
    """Force one sweep to the next cold address now (the service must not hold the chain)."""
    s = settings()
    with dev_signer(s):
        _sweep(s, wallet)


def _sweep(s: Settings, wallet: str) -> None:
    from walletsvc.treasury.sweeps import sweep_view

    runtime = open_runtime(s)
    try:
        runtime.scanner.sync()
        row = runtime.sweeper.force(wallet, actor=CLI_ACTOR)
        runtime.worker.broadcast_signed()
        with runtime.db.read() as uow:
            tx = uow.transactions.get(row.transaction_id)
            assert tx is not None
            typer.echo(json.dumps(sweep_view(row, tx), indent=2))
    except DomainError as exc:
        fail(f"sweep failed: {exc.message}")
    finally:
        runtime.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Run the API and the background worker in one process.

    On the embedded default the dev chain runs beside it: its own loopback JSON-RPC port for
    `walletsvc devchain` and, under `make run`, a block every few seconds.
    """
    import uvicorn

    from walletsvc.api.app import create_app

    s = settings()
    _use_service_logs()
    if host:
        s.host = host
    if port:
        s.port = port
    banner = s.data_dir / "dev-credentials.json"
    if banner.exists():
        _print_newcomer_banner(json.loads(banner.read_text()), s)
    if s.chain_backend != "embedded":
        uvicorn.run(create_app(s), host=s.host, port=s.port, **_SERVICE_LOGS, **_tls(s))
        return
    with dev_signer(s):
        _serve_with_dev_chain(s)


signer_app = typer.Typer(help="The signer process and its local set-up (on the signer host).")
app.add_typer(signer_app, name="signer")


@signer_app.callback(invoke_without_command=True)
def signer_command(ctx: typer.Context) -> None:
    """Run the signer: the only process that holds seeds (docs/runbook.md, "The signer").

    It serves <signer_dir>/signer.sock (mode 0600) and, with WALLETSVC_SIGNER_TCP_HOST set,
    a mutual-TLS port. Run it as its own OS user, or on its own host.
    """
    if ctx.invoked_subcommand is not None:
        return
    import signal

    from walletsvc.signer.ledger import LedgerBroken
    from walletsvc.signer.server import SignerServer, SignerSetupError

    _use_service_logs()
    s = settings()
    try:
        server = SignerServer(s)
    except (LedgerBroken, SignerSetupError) as exc:
        typer.secho(f"SIGNER REFUSES TO START: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(3) from None
    # SIGTERM ends the serve loop like Ctrl-C, so the socket is removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    typer.echo(f"signer serving {s.signer_socket}", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@signer_app.command("set-cold")
def signer_set_cold(
    destination: Annotated[str, typer.Argument(help="Account xpub/zpub or wpkh/wsh descriptor")],
    wallet: Annotated[str, typer.Option()] = "pool-hot",
) -> None:
    """Install a wallet's cold destination in the signer's own ledger (signer stopped).

    Local only, by whoever holds the signer's files: the service can never point the
    signer's "to cold" anywhere. Run it with the destination staff approved."""
    with local_signer(settings()) as core:
        try:
            parsed = core.install_cold(wallet, destination)
        except DomainError as exc:
            fail(exc.message)
    typer.echo(f"signer cold destination of {wallet}: {parsed.descriptor}")
    typer.echo(f"fingerprint: {parsed.fingerprint}  (compare with the service's and devices)")


@signer_app.command("import-seed")
def signer_import_seed(
    epoch: Annotated[int, typer.Option(min=1, help="The key epoch the words are the seed of")],
    xpub: Annotated[str, typer.Option(help="The account xpub the service holds for that epoch")],
    wallet: Annotated[str, typer.Option()] = "pool-hot",
) -> None:
    """Import a key epoch made before the signer held seeds, from its recovery words (read
    from stdin), into the signer's own ledger (signer stopped). The upgrade path once genesis
    is closed (docs/runbook.md); the words must derive ``--xpub``."""
    from walletsvc.signer.errors import SignerError

    s = settings()
    phrase = sys.stdin.readline() if not sys.stdin.isatty() else ""
    if not phrase.strip():
        phrase = typer.prompt("recovery words", hide_input=True)
    refused = "import-seed runs on the signer's host with the signer stopped: "
    with local_signer(s, refused=refused) as core:
        try:
            keys = core.import_legacy_words(wallet, epoch, phrase, xpub)
        except SignerError as exc:
            fail(f"the signer refused the words: {exc.message}")
        finally:
            del phrase
    typer.echo(f"signer: key epoch {epoch} of {wallet} imported (xpub {keys['account_xpub']})")


@signer_app.command("close-genesis")
def signer_close_genesis() -> None:
    """End the signer's trusted enrolment: from now on a new staff member, or a changed one,
    needs the policy's policy_change quorum recorded in the signer. Cannot be undone."""
    from walletsvc.signer.client import SignerClient

    s = settings()
    with dev_signer(s):
        signer = SignerClient(s)
        try:
            still_open = signer.close_genesis()
        except DomainError as exc:
            fail(exc.message)
            return
        finally:
            signer.close()
    typer.echo("signer genesis: " + ("open" if still_open else "closed"))


@signer_app.command("status")
def signer_status() -> None:
    """What the running signer holds (JSON): its policy hashes (default and per wallet), key
    epochs, cold destinations, allowlist copy, freezes and audit anchor. No secrets."""
    import json

    from walletsvc.signer.client import SignerClient

    signer = SignerClient(settings())
    try:
        status = signer.status()
    except DomainError as exc:
        fail(exc.message)
        return
    finally:
        signer.close()
    typer.echo(json.dumps(status, indent=2, sort_keys=True))


@signer_app.command("set-policy")
def signer_set_policy(
    policy: Annotated[Path, typer.Argument(help="The policy YAML staff approved")],
) -> None:
    """Install a policy in the signer's own ledger (signer stopped): its limits, velocity
    and theft-shield budget are the ones the signer itself enforces. Local only."""
    from walletsvc.policy.document import PolicyError, load_policy_yaml, policy_hash

    try:
        document = load_policy_yaml(policy.read_text())
    except (OSError, PolicyError) as exc:
        fail(f"{policy}: {exc}")
    with local_signer(settings()) as core:
        changed = core.install_policy(document)
    state = "installed" if changed else "already in force"
    typer.echo(f"signer policy {policy_hash(document)}: {state}")


def dev_signer(s: Settings) -> Any:
    """On the embedded regtest default, a signer child process unless one already answers;
    so `make run` stays one command. Elsewhere the operator runs `walletsvc signer` first."""
    from walletsvc.cli.dev_signer import running_dev_signer

    return running_dev_signer(s)


@app.command()
def worker() -> None:
    """Run the background work alone (scanner, signing, broadcast, sweeps, webhooks).

    For a deployment that runs the API with WALLETSVC_RUN_WORKER=false and the worker as a
    service of its own (docs/deploy/). Stops cleanly on SIGTERM or Ctrl-C.
    """
    import signal
    import threading

    s = settings()
    if s.chain_backend == "embedded":
        fail("the embedded development chain lives inside `walletsvc serve`; run serve alone")
    _use_service_logs()
    runtime = open_runtime(s)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runtime.start_background()
    try:
        stop.wait()
    finally:
        runtime.close()


# uvicorn keeps the JSON configuration (no log_config of its own); the request-id middleware
# writes one line per request, so uvicorn's plain access log would only repeat it.
_SERVICE_LOGS: dict[str, Any] = {"log_config": None, "access_log": False}


def _tls(s: Settings) -> dict[str, Any]:
    """HTTPS (and client certificates) when the settings ask for it."""
    from walletsvc.api.tls import uvicorn_tls_options

    return uvicorn_tls_options(s)


def _use_service_logs() -> None:
    """The service logs JSON lines (walletsvc.bootstrap.logs); the other commands keep text."""
    from walletsvc.bootstrap.logs import configure_service_logging

    configure_service_logging(logging.INFO)


def _serve_with_dev_chain(s: Settings) -> None:
    import uvicorn

    from walletsvc.api.app import create_app
    from walletsvc.bootstrap.runtime import Runtime
    from walletsvc.devchain.service import serving_dev_chain

    with serving_dev_chain(s) as chain:
        runtime = Runtime.open(s, chain=chain)
        try:
            if s.run_worker:
                runtime.start_background()
            app = create_app(s, runtime=runtime)
            uvicorn.run(app, host=s.host, port=s.port, **_SERVICE_LOGS, **_tls(s))
        finally:
            runtime.close()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who uses this token")],
    scope: Annotated[
        list[str],
        typer.Option(help=f"Repeat for each scope; one of: {', '.join(sorted(SCOPES))}"),
    ],
    cert_fingerprint: Annotated[
        str | None,
        typer.Option(
            help="Bind the token to a client certificate: its SHA-256 fingerprint "
            "(`openssl x509 -noout -fingerprint -sha256 -in client.pem`)"
        ),
    ] = None,
) -> None:
    """Create an API token; it is printed once and stored only as a hash."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance.tokens import create_token
    from walletsvc.keys.kek import load_kek

    s = settings()
    db = open_database(s)
    try:
        created = create_token(
            db,
            load_kek(s.kek_path).row_tagger(),
            name=name,
            scopes=scope,
            actor=CLI_ACTOR,
            cert_fingerprint=cert_fingerprint,
        )
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(f"token id: {created.token_id}  scopes: {','.join(created.scopes)}")
    if created.cert_fingerprint:
        typer.echo(f"bound to the client certificate with SHA-256 {created.cert_fingerprint}")
    typer.echo(created.secret)


@token_app.command("list")
def token_list() -> None:
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance.tokens import list_tokens

    db = open_database(settings())
    with db.read() as uow:
        rows = list_tokens(uow)
        if not rows:
            typer.echo("no API tokens (create one with `walletsvc token create`)")
        for t in rows:
            state = "revoked" if t.revoked_at else "active"
            typer.echo(f"{t.id}  {t.name:20}  {state:8} {','.join(t.scopes)}")


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance.tokens import revoke_token
    from walletsvc.keys.kek import load_kek

    try:
        s = settings()
        tags = load_kek(s.kek_path).row_tagger()
        revoke_token(open_database(s), tags, token_id=token_id, actor=CLI_ACTOR)
    except DomainError as exc:
        fail(exc.message)
    typer.echo("revoked")


@app.command("freeze")
def freeze_command(
    reason: Annotated[str, typer.Option(help="Why: goes into the audit log")],
    scope: Annotated[str, typer.Option(help="One of: all, withdrawals, deposits")] = "all",
    wallet: Annotated[str | None, typer.Option(help="One wallet (default: all)")] = None,
) -> None:
    """Freeze now: the signer first, then the database (works when the API is down)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.incident.freeze import SIGNER_SCOPES, freeze, freeze_overview, freeze_signer
    from walletsvc.signer.client import SignerClient

    s = settings()
    signer = SignerClient(s)
    if scope in SIGNER_SCOPES and freeze_signer(signer, wallet, reason):
        typer.secho("signer frozen: it signs nothing more for these wallets", fg=typer.colors.RED)
    db = open_database(s)
    try:
        row = freeze(db, scope=scope, wallet=wallet, reason=reason, actor=CLI_ACTOR)
    except DomainError as exc:
        fail(exc.message)
        return
    except Exception as exc:  # the database is down: the signer's freeze above still holds
        fail(f"the database freeze failed ({type(exc).__name__}); the signer is frozen")
        return
    target = f"wallet {wallet}" if wallet else "every wallet"
    typer.secho(f"FROZEN ({scope}) for {target}: freeze {row.id}", fg=typer.colors.RED)
    typer.echo("Nothing more is signed or broadcast. Lifting it needs an approval quorum.")
    echo_held_payouts(freeze_overview(db)["held_payouts"])


@app.command("unfreeze")
def unfreeze_command(
    reason: Annotated[str, typer.Option(help="Why it is safe to resume: goes into the audit")],
    freeze_id: Annotated[str | None, typer.Option(help="One freeze (default: --wallet)")] = None,
    wallet: Annotated[
        str | None, typer.Option(help="Every freeze of this wallet (default: every freeze)")
    ] = None,
) -> None:
    """Ask to lift freezes: opens an approval request (works with the API down)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.incident.unfreeze import Requester, Target, propose, show_unfreeze
    from walletsvc.keys.kek import load_kek

    if freeze_id and wallet:
        fail("give --freeze-id or --wallet, not both")
    s = settings()
    try:
        row = propose(
            open_database(s),
            load_kek(s.kek_path).row_tagger(),
            target=Target(freeze_id=freeze_id, wallet=wallet),
            reason=reason,
            requester=Requester(CLI_ACTOR, None),
        )
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(f"unfreeze request {row.id} for freezes {', '.join(row.freeze_ids)}")
    typer.echo(f"approval request: {row.approval_request_id}")
    typer.echo("The freezes lift when the governance.unfreeze quorum approves it.")
    held = show_unfreeze(open_database(s), load_kek(s.kek_path).row_tagger(), row.id)
    echo_held_payouts(held["held_payouts"])


def echo_held_payouts(held: list[dict[str, Any]]) -> None:
    """What a lift lets out, so that operators cancel what they do not want first."""
    if not held:
        typer.echo("No payouts are held: nothing leaves when the freezes lift.")
        return
    total = sum(p["amount_sat"] for p in held)
    typer.secho(
        f"{len(held)} held payout(s), {total} sat, leave when the freezes lift:",
        fg=typer.colors.YELLOW,
    )
    for p in held:
        typer.echo(
            f"  {p['id']}  {p['status']:<8}  {p['amount_sat']:>16} sat  to {p['destination']}"
            f"  ({p['wallet']}, {p['created_at']})"
        )
    typer.echo("Cancel an approved one you do not want: POST /v1/withdrawals/<id>/cancel")


@app.command("rotate")
def rotate_command(
    wallet: Annotated[str, typer.Option(help="The wallet whose keys to replace")] = "pool-hot",
    reason: Annotated[str | None, typer.Option(help="Why: opens a key-rotation request")] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="Run the post-rotation pass now (sweep, re-sign)")
    ] = False,
    status: Annotated[bool, typer.Option("--status", help="Show the rotation state")] = False,
) -> None:
    """Key rotation: --reason opens the governed request; --sweep and --status follow it up.

    Works with the API down. --sweep must not run beside a service holding the embedded chain.
    """
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.incident.rotation import propose, rotation_status
    from walletsvc.incident.unfreeze import Requester
    from walletsvc.keys.kek import load_kek
    from walletsvc.wallets.service import get_wallet

    if sum((reason is not None, sweep, status)) != 1:
        fail("give exactly one of --reason, --sweep, --status")
    s = settings()
    try:
        if reason is not None:
            row = propose(
                open_database(s),
                load_kek(s.kek_path).row_tagger(),
                wallet=wallet,
                reason=reason,
                requester=Requester(CLI_ACTOR, None),
            )
            typer.echo(f"key rotation {row.id} of {wallet} (epoch {row.from_epoch})")
            typer.echo(f"approval request: {row.approval_request_id}")
            typer.echo("The rotation happens when the governance.key_rotation quorum approves.")
            return
        if sweep:
            _rotation_pass(s, wallet)
        db = open_database(s)
        with db.read() as uow:
            state = rotation_status(uow, get_wallet(uow, wallet))
        typer.echo(json.dumps(state, indent=2))
        typer.echo(old_epoch_summary(state), err=True)  # stdout stays JSON for scripts
    except DomainError as exc:
        fail(exc.message)


def old_epoch_summary(state: dict[str, Any]) -> str:
    """The runbook's unfreeze gate in one line: what the old (possibly stolen) keys still hold."""
    mature, immature = state["old_epoch_coins_left"], state["old_epoch_immature_coins_left"]
    if mature == 0 and immature == 0:
        return "old epochs: nothing left on the old keys"
    lines = [f"old epochs: {mature} spendable coins ({state['old_epoch_sat_left']} sat) left"]
    if immature:
        heights = [c["matures_at_height"] for c in state["old_epoch_immature_coins"]]
        lines.append(
            f"{immature} immature coinbases ({state['old_epoch_immature_sat_left']} sat) still "
            f"on the old keys, maturing at heights {min(heights)}-{max(heights)}: each is swept "
            "to cold on the pass at its height"
        )
    return "; ".join(lines)


@app.command("backup")
def backup_command(
    to: Annotated[Path, typer.Option(help="A new directory to write the backup into")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="sqlite, pg_dump or json (default: the database's own)"),
    ] = None,
) -> None:
    """Back up the database and the data directory's key files (works with the API up)."""
    from walletsvc.bootstrap.backup import backup

    try:
        manifest = backup(settings(), to, fmt=fmt, progress=_progress)
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(json.dumps(manifest, indent=2))
    if manifest["kek_included"]:
        typer.secho(
            "This backup holds the key-encryption key (it was in the data directory): keep it "
            "as you keep the KEK, never next to a copy of the database.",
            fg=typer.colors.YELLOW,
            err=True,
        )


@app.command("restore")
def restore_command(
    from_: Annotated[
        Path | None, typer.Option("--from", help="A directory written by walletsvc backup")
    ] = None,
    words: Annotated[
        bool, typer.Option("--words", help="Rebuild from recovery words (read from stdin)")
    ] = False,
    wallet: Annotated[str, typer.Option(help="With --words: the wallet's name")] = "pool-hot",
    cold_xpub: Annotated[str | None, typer.Option(help="With --words: cold storage")] = None,
) -> None:
    """Restore onto a fresh data directory: a backup, or the recovery words and a rescan."""
    from walletsvc.bootstrap.backup import restore, restore_from_words

    if (from_ is None) == (not words):
        fail("give --from DIR or --words, one of the two")
    s = settings()
    try:
        if from_ is not None:
            restore(s, from_, progress=_progress)
            return
        phrase = sys.stdin.readline() if not sys.stdin.isatty() else ""
        if not phrase.strip():
            phrase = typer.prompt("recovery words", hide_input=True)
        _import_words_into_signer(s, wallet, phrase)
        with dev_signer(s):
            result = restore_from_words(
                s,
                wallet=wallet,
                chain=open_runtime_chain(s),
                cold_destination=cold_xpub,
                progress=_progress,
            )
    except DependencyUnavailable as exc:
        if "signer" not in exc.message:
            fail(exc.message)
        fail(
            f"{exc.message}. The words are in the signer's ledger now: start `walletsvc "
            f"signer`, then `walletsvc init --wallet {wallet}` (the wallet takes the signer's "
            "keys) and `walletsvc serve` (the scanner scans from SCAN_START_HEIGHT)"
        )
        return
    except DomainError as exc:
        fail(exc.message)
        return
    assert result.wallet is not None
    typer.echo(f"wallet {result.wallet.name} restored: xpub {result.wallet.account_xpub}")


def _import_words_into_signer(s: Settings, wallet: str, words: str) -> None:
    """The seed of the words into the signer's own ledger: local, with the signer's files and
    the signer stopped (its lock says so), like ``walletsvc signer set-cold``."""
    from walletsvc.signer.errors import SignerError

    s.data_dir.mkdir(parents=True, exist_ok=True)
    refused = "restore --words runs on the signer's host with the signer stopped: "
    with local_signer(s, refused=refused) as core:
        try:
            keys = core.import_words(wallet, words)
        except SignerError as exc:
            fail(f"the signer refused the words: {exc.message}")
    _progress(f"signer: key epoch 1 of {wallet} imported (xpub {keys['account_xpub']})")


def _progress(line: str) -> None:
    typer.echo(line, err=True)  # stdout stays for the result


def open_runtime_chain(s: Settings) -> ChainBackend:
    """The chain alone, as ``open_runtime`` would use it."""
    if s.chain_backend != "embedded":
        from walletsvc.chain.factory import open_chain

        return open_chain(s)
    from walletsvc.devchain.service import open_dev_chain

    return open_dev_chain(s)


@app.command("shield")
def shield_command(
    wallet: Annotated[str | None, typer.Option(help="One wallet (default: every wallet)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """The theft shield's incidents, newest first: JSON on stdout, one line each on stderr."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.incident.shield import shield_incidents

    try:
        report = shield_incidents(open_database(settings()), wallet=wallet, limit=limit)
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(json.dumps(report, indent=2))
    if not report["incidents"]:
        typer.echo("no theft was ever caught in the mempool", err=True)
    for incident in report["incidents"]:
        typer.echo(shield_summary(incident), err=True)


def shield_summary(incident: dict[str, Any]) -> str:
    """One incident in a line: who tried to take what, the rounds, and how it ended."""
    outcome = {
        "saved": f"SAVED {incident['saved_sat']} sat to cold for {incident['fees_spent_sat']} "
        "sat in fees",
        "lost": f"LOST {incident['lost_sat']} sat to {incident['resolved_txid']}",
        "racing": "RACING (not mined yet)",
    }[incident["status"]]
    capped = "; fee budget reached" if incident["cap_reached"] else ""
    return (
        f"{incident['created_at']} {incident['wallet']}: {incident['stolen_sat']} sat stolen by "
        f"{incident['first_theft_txid']}, {len(incident['rounds'])} round(s){capped}: {outcome}"
    )


def _rotation_pass(s: Settings, wallet: str) -> None:
    with dev_signer(s):
        _rotation_steps(s, wallet)


def _rotation_steps(s: Settings, wallet: str) -> None:
    runtime = open_runtime(s)
    try:
        runtime.scanner.sync()
        for txid in runtime.rotation.run(wallet):
            typer.echo(f"signed {txid}")
        runtime.worker.broadcast_signed()
    finally:
        runtime.close()


@app.command("approve")
def approve_command(
    request_id: Annotated[str, typer.Argument(help="The approval request id")],
    user: Annotated[str, typer.Option("--as", help="Your staff username")],
    totp: Annotated[str, typer.Option(help="A fresh code from your authenticator")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve")] = False,
    comment: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Decide an approval request as a staff approver (asks the password; then the TOTP code).

    For incidents with the API down. It asks for the same factors as the API (password, then
    a step-up code); whoever runs it holds the KEK already, so it opens no new way in.
    """
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance import approvals
    from walletsvc.governance.sessions import check_password
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    s = settings()
    db, kek = open_database(s), load_kek(s.kek_path)
    tags = kek.row_tagger()
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True)
    else:  # scripts and tests pipe it in; never on the command line (shell history)
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        principal = check_password(db, tags, s, username=user, password=password)
        # Show what is being decided; the decision is bound to exactly this digest.
        shown = approvals.show_request(db, tags, request_id)
        typer.echo(json.dumps({"content": shown["content"], "digest": shown["digest"]}, indent=2))
        with dev_signer(s):  # a rotation's or unfreeze's quorum asks the signer
            status = approvals.decide(
                db,
                tags,
                SignerClient(s),
                s,
                request_id=request_id,
                staff=principal,
                decision="reject" if reject else "approve",
                digest=shown["digest"],
                totp=totp,
                comment=comment,
            )
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(f"request {request_id}: {status}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain and the integrity tags of governed rows."""
    from walletsvc.bootstrap.approval_kinds import register_approval_kinds
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.governance import audit
    from walletsvc.keys.kek import load_kek
    from walletsvc.signer.client import SignerClient

    s = settings()
    kek = load_kek(s.kek_path)
    db = open_database(s)
    # Pending approval requests are checked against their subjects, built by their kinds.
    signer = SignerClient(s)
    register_approval_kinds(signer)
    anchors: list[tuple[int, str]] = []
    try:
        anchors = signer.audit_anchors()
    except DomainError as exc:
        typer.secho(f"not checked against the signer's anchors: {exc.message}", err=True)
    with db.read() as uow:
        report = audit.verify(uow, kek.row_tagger(), kek.audit_key(), anchors=anchors)
    if anchors:
        typer.echo(
            f"checked against the signer's {len(anchors)} anchors, the last at event"
            f" {anchors[-1][0]}"
        )
    typer.echo(f"{report.events_checked} events, {report.rows_checked} governed rows checked")
    if not report.ok:
        for problem in report.problems:
            typer.secho(f"  {problem}", fg=typer.colors.RED)
        raise typer.Exit(2)
    typer.echo("audit chain intact")


@devchain_app.command("mine")
def devchain_mine(
    blocks: Annotated[int, typer.Argument(min=1, max=10_000)] = 1,
    to: Annotated[str | None, typer.Option("--to", help="Coinbase address")] = None,
    tx: Annotated[
        list[str] | None,
        typer.Option(
            "--tx",
            help="Mine one block of exactly these transactions, in order "
            "(a mempool txid or raw hex, even one the mempool never saw; repeatable)",
        ),
    ] = None,
) -> None:
    """Mine blocks on the embedded chain (through the running service if it holds the chain)."""
    from walletsvc.devchain.commands import mine

    if tx and blocks != 1:
        fail("--tx mines exactly one block")
        return
    try:
        hashes = mine(settings(), blocks, to, tx)
    except DomainError as exc:
        fail(exc.message)
        return
    typer.echo(f"mined {len(hashes)} block(s); tip {hashes[-1] if hashes else '-'}")


@devchain_app.command("status")
def devchain_status() -> None:
    from walletsvc.devchain.commands import status

    typer.echo(json.dumps(status(settings()), indent=2))


@dev_app.command("bootstrap")
def dev_bootstrap(
    wallet: Annotated[str, typer.Option()] = "pool-hot",
) -> None:
    """Idempotent dev set-up for `make run`: init, fund with mined coins, a token, credentials."""
    from walletsvc.bootstrap.setup import dev_bootstrap as bootstrap
    from walletsvc.devchain.service import open_dev_chain

    s = settings()
    if s.network is not Network.REGTEST or s.chain_backend != "embedded":
        fail("dev bootstrap is for the embedded regtest chain only")
    with dev_signer(s):
        creds, token_created = bootstrap(s, open_dev_chain(s), wallet=wallet, actor=CLI_ACTOR)
    typer.echo(f"dev wallet {creds['wallet']!r} funded on the embedded regtest chain")
    typer.echo(f"dev credentials written to {s.data_dir / 'dev-credentials.json'}")
    typer.echo(f'console: {creds["base_url"]}/console (dev staff: "staff" in that file)')
    if token_created:
        # The one time the token is shown; `serve` points at the file instead.
        typer.echo(f"API token (dev, shown once): {creds['api_token']}")


@dev_app.command("totp")
def dev_totp(name: str) -> None:
    """Print the current TOTP code of a dev staff member (from dev-credentials.json)."""
    import pyotp

    s = settings()
    path = s.data_dir / "dev-credentials.json"
    staff = json.loads(path.read_text()).get("staff", {}) if path.exists() else {}
    if name not in staff:
        fail(f"no dev staff member {name!r} in {path} (run `walletsvc dev bootstrap`)")
    typer.echo(pyotp.TOTP(staff[name]["totp_secret"]).now())


def _print_newcomer_banner(creds: dict[str, Any], s: Settings) -> None:
    """How to try the service. Never the token itself: this runs at every start and its
    output ends up in logs; the token is in the credentials file (mode 0600)."""
    path = s.data_dir / "dev-credentials.json"
    wallet, base = creds["wallet"], creds["base_url"]
    destination = creds.get("demo_destination", "")
    lines = [
        "",
        "=" * 78,
        " walletsvc (dev) is starting on " + base,
        "=" * 78,
        f" wallet:           {wallet}",
        f" credentials JSON: {path}",
        f" Console:          {base}/console   (log in as a dev approver below)",
        *_dev_staff_lines(creds, path),
        " API token (dev):  in the credentials JSON; load it with",
        "   export TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))"
        f'["api_token"])\' {path})',
        "",
        " Request a payout:",
        f"   curl -s -X POST {base}/v1/withdrawals \\",
        '     -H "Authorization: Bearer $TOKEN" \\',
        '     -H "Idempotency-Key: demo-$(date +%s)" \\',
        "     -H 'Content-Type: application/json' \\",
        f'     -d \'{{"wallet":"{wallet}","destination":"{destination}",'
        '"amount_sat":100000,"reference":"first-payout"}\'',
        "",
        " Then follow it (the dev chain mines a block every few seconds):",
        f'   curl -s {base}/v1/withdrawals/<id> -H "Authorization: Bearer $TOKEN"',
        "",
        f" Wallet balances:  curl -s {base}/v1/wallets/{wallet} \\",
        '                     -H "Authorization: Bearer $TOKEN"',
        f" API docs:         {base}/docs   (OpenAPI at {base}/openapi.json)",
        " Project docs:     README.md, docs/architecture.md, docs/api.md, docs/runbook.md",
        "=" * 78,
        "",
    ]
    typer.echo("\n".join(lines))


def _dev_staff_lines(creds: dict[str, Any], path: Path) -> list[str]:
    """Where the dev staff's credentials are (never the secrets: this banner reaches logs)."""
    staff = creds.get("staff") or {}
    if not staff:
        return []
    names = ", ".join(f"{name} ({info['role']})" for name, info in staff.items())
    return [
        f" Dev staff:        {names}",
        f'   passwords and TOTP secrets: "staff" in {path}',
        "   a TOTP code now: walletsvc dev totp alice   (or add otpauth_uri to an app)",
    ]


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
