"""Settings, from the environment (prefix WALLETSVC_) with embedded-development defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from walletsvc.domain.network import Network


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLETSVC_", extra="ignore")

    data_dir: Path = Path(".walletsvc")
    # Default: SQLite in the data directory. Production: postgresql+psycopg://...
    database_url: str = ""
    # 32 random bytes that encrypt every seed; keep it outside the database and its backups.
    kek_file: Path | None = None
    network: Network = Network.REGTEST

    chain_backend: Literal["embedded", "rpc"] = "embedded"
    rpc_url: str = "http://127.0.0.1:18443"
    rpc_user: str = ""
    rpc_password: SecretStr = SecretStr("")
    rpc_cookie_file: Path | None = None
    rpc_timeout_s: float = 10.0
    rpc_retries: int = 3

    # The embedded chain's constant fee estimate; the RPC backend asks estimatesmartfee.
    embedded_fee_rate_sat_per_vb: int = 2
    fee_floor_sat_per_vb: int = 1
    fee_ceiling_sat_per_vb: int = 200
    # Absolute ceiling on the fee of any one transaction we sign.
    max_fee_sat: int = 200_000
    confirmation_target_blocks: int = 6
    min_confirmations: int = 1

    policy_file: Path = Path("policies/default.yaml")

    host: str = "127.0.0.1"
    port: int = 8000
    run_worker: bool = True
    worker_interval_s: float = 1.0
    # Under `make run` the dev chain (walletsvc.devchain) mines a block this often while its
    # mempool is not empty; 0 disables the timer (tests mine explicitly).
    devchain_mine_interval_s: float = 0.0
    # The dev chain's Core-style JSON-RPC port on loopback; 0 picks a free one (the port in use
    # is advertised in <data_dir>/chain/rpc.json for `walletsvc devchain`).
    devchain_rpc_port: int = Field(default=0, ge=0, le=65_535)
    session_ttl_s: int = Field(default=900, ge=60)
    max_batch_outputs: int = Field(default=100, ge=1, le=2_000)
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

    # Incident response (docs/runbook.md). After a key rotation, old-epoch coins go to cold at
    # a high priority: the fee estimate for this confirmation target, at least this rate.
    rotation_sweep_target_blocks: int = Field(default=1, ge=1, le=1_008)
    rotation_sweep_min_fee_rate: int = Field(default=10, ge=1, le=10_000)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'walletsvc.db').resolve()}"
        if self.kek_file is None:
            self.kek_file = self.data_dir / "kek.bin"
        if self.chain_backend == "embedded" and self.network is not Network.REGTEST:
            raise ValueError("the embedded chain is regtest only; use chain_backend=rpc")
        return self

    @property
    def chain_dir(self) -> Path:
        return self.data_dir / "chain"

    @property
    def kek_path(self) -> Path:
        assert self.kek_file is not None
        return self.kek_file
