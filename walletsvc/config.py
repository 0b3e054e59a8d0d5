"""Settings, from the environment (prefix WALLETSVC_) with embedded-development defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from walletsvc.domain.network import Network
from walletsvc.shipped import development_policy_file


class Settings(BaseSettings):
    # Errors never echo the input: it holds the RPC password.
    model_config = SettingsConfigDict(
        env_prefix="WALLETSVC_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path(".walletsvc")
    # Default: SQLite in the data directory. Production: postgresql+psycopg://...
    database_url: str = ""
    # Off regtest SQLite is refused unless this says it was chosen (a small test deployment).
    allow_sqlite: bool = False
    # 32 random bytes behind the service's row tags, audit chain and staff TOTP secrets (the
    # seeds are the signer's, under its own key); keep it outside the database and its backups.
    kek_file: Path | None = None
    network: Network = Network.REGTEST

    chain_backend: Literal["embedded", "rpc"] = "embedded"
    rpc_url: str = "http://127.0.0.1:18443"
    rpc_user: str = ""
    rpc_password: SecretStr = SecretStr("")
    rpc_cookie_file: Path | None = None
    rpc_timeout_s: float = 10.0
    rpc_retries: int = 3
    # Both testnets are Network.TESTNET (same addresses and xpubs); the RPC backend tells them
    # apart by the node's genesis block and refuses the one not named here.
    testnet_variant: Literal["testnet4", "testnet3"] = "testnet4"
    # estimatesmartfee's mode for payouts. Conservative: a payout that sits unconfirmed keeps
    # funds reserved and invites fee bumps; Core 28 changed its own default to economical.
    fee_estimate_mode: Literal["conservative", "economical"] = "conservative"
    # With no fee estimate from the node (fresh node, quiet network) the RPC backend refuses to
    # price a transaction; set this to sign at this rate instead (logged as a warning each time).
    fallback_fee_rate_sat_per_vb: int | None = Field(default=None, ge=1, le=10_000)

    # The embedded chain's constant fee estimate; the RPC backend asks estimatesmartfee.
    embedded_fee_rate_sat_per_vb: int = 2
    fee_floor_sat_per_vb: int = 1
    fee_ceiling_sat_per_vb: int = 200
    # Absolute ceiling on the fee of any one transaction we sign.
    max_fee_sat: int = 200_000
    confirmation_target_blocks: int = 6
    min_confirmations: int = 1

    # The first policy `init` installs. Default: the regtest development policy shipped with
    # walletsvc (policies/default.yaml), which is refused on a real network.
    policy_file: Path = Field(default_factory=development_policy_file)

    host: str = "127.0.0.1"
    port: int = 8000
    run_worker: bool = True
    worker_interval_s: float = 1.0
    # Several service processes may share one database: only the holder of the worker's
    # leader lease runs the background passes (walletsvc.db.leader). On SQLite the lease
    # expires this long after its holder's last pass, and another process takes over; on
    # PostgreSQL takeover follows the holder's connection closing, at once.
    leader_lease_ttl_s: float = Field(default=15.0, gt=0)
    # Under `make run` the dev chain (walletsvc.devchain) mines a block this often while its
    # mempool is not empty; 0 disables the timer (tests mine explicitly).
    devchain_mine_interval_s: float = 0.0
    # The dev chain's Core-style JSON-RPC port on loopback; 0 picks a free one (the port in use
    # is advertised in <data_dir>/chain/rpc.json for `walletsvc devchain`).
    devchain_rpc_port: int = Field(default=0, ge=0, le=65_535)
    session_ttl_s: int = Field(default=900, ge=60)
    # The console's public origin ("https://treasury.example.com"): passkeys are bound to its
    # host name (the WebAuthn RP id) and assertions must come from exactly this origin. Empty:
    # the origin the browser used (development only: behind a proxy, set it).
    console_origin: str = ""
    # Payouts per transaction (the output cap). A batch heavier than the standard weight or
    # dearer than max_fee_sat is split further by the worker (docs/treasury.md).
    max_batch_outputs: int = Field(default=2_000, ge=1, le=5_000)
    # Where the scanner starts on a fresh database (a production wallet's birth height).
    scan_start_height: int = Field(default=0, ge=0)

    # Staff step-up (TOTP, RFC 6238). Codes of this many time steps either side of now are
    # accepted (clock drift); each step at most once per staff member.
    totp_valid_window: int = Field(default=1, ge=0, le=2)
    # Wrong codes or passwords in a row before the account locks, and for how long.
    totp_max_failures: int = Field(default=5, ge=1, le=100)
    totp_lockout_s: int = Field(default=900, ge=60)
    # Rejections by approvers that reject an approval request (1: any single approver's no).
    approval_rejections_to_reject: int = Field(default=1, ge=1, le=100)

    # Treasury (docs/treasury.md). Payouts wait up to this long for a fuller batch (a batch of
    # max_batch_outputs goes at once); 0 sends whatever is approved on every pass.
    batch_max_wait_s: float = Field(default=0.0, ge=0.0, le=86_400.0)
    # A payout batch still unconfirmed this many blocks after signing is fee-bumped (BIP125);
    # 0 disables bumping.
    rbf_after_blocks: int = Field(default=6, ge=0, le=1_000)
    # Sweeps and refill alerts run after each scan for wallets with a cold destination.
    auto_sweep: bool = True
    # Refill alerts are also POSTed here as JSON (empty: log, metric and audit event only).
    refill_webhook_url: str = ""

    # HTTPS (docs/runbook.md, "TLS and client certificates"): serve with this certificate and
    # key; with a client CA as well, every client must present a certificate it issued.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    # Requests per client (API token, staff session, or address without credentials) in each
    # window; over it the API answers 429 with RateLimit-* headers. 0 disables the limit.
    rate_limit_requests: int = Field(default=600, ge=0, le=1_000_000)
    rate_limit_window_s: float = Field(default=60.0, gt=0.0, le=86_400.0)
    # Threads running the sync routes and dependencies (anyio's default is 40). Intake decides
    # a wallet's queued payouts together, up to 16 at a time (walletsvc.payouts.intake): 32
    # holds one batch in flight and the next one queued. More threads mostly wait, and take
    # turns on the GIL with the event loop and the freeze lane (its own threads); fewer leave
    # no next batch queued while one runs: docs/performance.md, "The freeze under load".
    route_threads: int = Field(default=32, ge=2, le=1_000)

    # Webhooks (docs/api.md, "Webhooks"). The dispatcher runs this often; a failed delivery is
    # retried after base * 2**(attempt-1) seconds (at most cap), up to max_attempts attempts.
    webhook_interval_s: float = Field(default=1.0, gt=0.0, le=3_600.0)
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_base_s: float = Field(default=10.0, gt=0.0, le=86_400.0)
    webhook_backoff_cap_s: float = Field(default=3_600.0, gt=0.0, le=604_800.0)
    webhook_timeout_s: float = Field(default=5.0, gt=0.0, le=60.0)
    # Webhook URLs must be https (bodies are signed, not encrypted) except to loopback.
    webhook_allow_plain_http: bool = False

    # Incident response (docs/runbook.md). After a key rotation, old-epoch coins go to cold at
    # a high priority: the fee estimate for this confirmation target, at least this rate.
    rotation_sweep_target_blocks: int = Field(default=1, ge=1, le=1_008)
    rotation_sweep_min_fee_rate: int = Field(default=10, ge=1, le=10_000)

    # The signer (walletsvc.signer; docs/runbook.md, "The signer"). Its own directory holds its
    # key and ledger; the service reaches it over <signer_dir>/signer.sock, or over TCP with
    # mutual TLS when signer_tcp_host is set (cert/key: this side's; ca: the peer's issuer).
    signer_dir: Path | None = None
    signer_tcp_host: str = ""
    signer_tcp_port: int = Field(default=0, ge=0, le=65_535)
    signer_tls_cert: Path | None = None
    signer_tls_key: Path | None = None
    signer_tls_ca: Path | None = None
    signer_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # The theft shield's mempool watcher (docs/runbook.md, "The theft shield"). On Bitcoin
    # Core: its ZMQ publishers (bitcoind -zmqpubrawtx=... -zmqpubsequence=...), empty for none;
    # and in any case a gettxspendingprevout poll this often, which catches what a push missed.
    zmq_rawtx_url: str = ""
    zmq_sequence_url: str = ""
    mempool_poll_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    # Run the watcher on its own thread in the service (tests drive it step by step instead).
    run_mempool_watcher: bool = True

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'walletsvc.db').resolve()}"
        if self.kek_file is None:
            self.kek_file = self.data_dir / "kek.bin"
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("WALLETSVC_TLS_CERT and WALLETSVC_TLS_KEY go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("WALLETSVC_TLS_CLIENT_CA needs WALLETSVC_TLS_CERT and _KEY (HTTPS)")
        if self.chain_backend == "embedded" and self.network is not Network.REGTEST:
            raise ValueError("the embedded chain is regtest only; use chain_backend=rpc")
        return self

    @model_validator(mode="after")
    def _refuse_development_defaults_off_regtest(self) -> Settings:
        """What makes `make run` work in one step would lose coins on a real network.

        After the full-stack FastAPI template's ``_enforce_non_default_secrets``: every network
        but regtest refuses to start on such a default and names the setting to change
        (docs/runbook.md, "Production settings").
        """
        if self.network is Network.REGTEST:
            return self
        problems = _production_problems(self)
        if problems:
            raise ValueError(
                f"refusing development settings on {self.network.value}:\n- "
                + "\n- ".join(problems)
            )
        return self

    @property
    def chain_dir(self) -> Path:
        return self.data_dir / "chain"

    @property
    def signer_path(self) -> Path:
        return self.signer_dir if self.signer_dir is not None else self.data_dir / "signer"

    @property
    def signer_socket(self) -> Path:
        return self.signer_path / "signer.sock"

    @property
    def kek_path(self) -> Path:
        assert self.kek_file is not None
        return self.kek_file


def _production_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    kek = settings.kek_path.resolve()
    if kek.is_relative_to(settings.data_dir.resolve()):
        problems.append(
            f"WALLETSVC_KEK_FILE ({kek}) is inside WALLETSVC_DATA_DIR: keep the key-encryption "
            "key apart from the data directory, the database and their backups"
        )
    database = make_url(settings.database_url)
    sqlite_file = _sqlite_file(database)
    if sqlite_file is not None and kek.is_relative_to(sqlite_file.parent):
        problems.append(
            f"WALLETSVC_KEK_FILE ({kek}) is in the directory of the SQLite database: a backup of "
            "one would carry the other"
        )
    if database.get_backend_name() == "sqlite" and not settings.allow_sqlite:
        problems.append(
            "WALLETSVC_DATABASE_URL is SQLite: use PostgreSQL, or set WALLETSVC_ALLOW_SQLITE=true "
            "if this deployment really is meant to run on SQLite"
        )
    if settings.chain_backend == "rpc" and not _has_rpc_credentials(settings):
        problems.append(
            "the RPC backend has no credentials: set WALLETSVC_RPC_COOKIE_FILE, or "
            "WALLETSVC_RPC_USER and WALLETSVC_RPC_PASSWORD"
        )
    if settings.policy_file.resolve() == development_policy_file().resolve():
        problems.append(
            "WALLETSVC_POLICY_FILE is the regtest development policy: write your own "
            "(docs/policy.md) and point WALLETSVC_POLICY_FILE at it"
        )
    return problems


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for another database or an in-memory one."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def _has_rpc_credentials(settings: Settings) -> bool:
    password = settings.rpc_password.get_secret_value()
    return settings.rpc_cookie_file is not None or bool(settings.rpc_user and password)
