"""Settings: development defaults work on regtest and are refused on every real network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from walletsvc.config import Settings
from walletsvc.shipped import development_policy_file

REPO = Path(__file__).resolve().parents[1]
REAL_NETWORKS = ["mainnet", "testnet", "signet"]


@pytest.fixture(autouse=True)
def _no_walletsvc_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WALLETSVC_"):
            monkeypatch.delenv(name)


def production(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """Settings that pass the guard; each test changes one thing back to a development value."""
    good: dict[str, Any] = {
        "network": "mainnet",
        "data_dir": tmp_path / "data",
        "database_url": "postgresql+psycopg://walletsvc@db.internal:5432/walletsvc",
        "kek_file": tmp_path / "secrets" / "kek.bin",
        "chain_backend": "rpc",
        "rpc_cookie_file": tmp_path / "bitcoind" / ".cookie",
        "policy_file": tmp_path / "etc" / "policy.yaml",
    }
    return {**good, **changes}


@pytest.mark.parametrize("network", REAL_NETWORKS)
def test_production_settings_are_accepted(tmp_path: Path, network: str) -> None:
    settings = Settings(**production(tmp_path, network=network))
    assert settings.kek_path == tmp_path / "secrets" / "kek.bin"


REFUSALS = [
    pytest.param({"kek_file": None}, "WALLETSVC_KEK_FILE .* inside WALLETSVC_DATA_DIR", id="kek"),
    pytest.param(
        {"kek_file": "{tmp}/data/keys/kek.bin"},
        "WALLETSVC_KEK_FILE .* inside WALLETSVC_DATA_DIR",
        id="kek-below-data-dir",
    ),
    pytest.param(
        {
            "database_url": "sqlite:///{tmp}/db/walletsvc.db",
            "allow_sqlite": True,
            "kek_file": "{tmp}/db/kek.bin",
        },
        "WALLETSVC_KEK_FILE .* directory of the SQLite database",
        id="kek-beside-sqlite",
    ),
    pytest.param(
        {"database_url": "sqlite:///{tmp}/db/walletsvc.db"},
        "WALLETSVC_DATABASE_URL is SQLite.*WALLETSVC_ALLOW_SQLITE",
        id="sqlite",
    ),
    pytest.param({"database_url": ""}, "WALLETSVC_DATABASE_URL is SQLite", id="default-database"),
    pytest.param(
        {"rpc_cookie_file": None}, "RPC backend has no credentials", id="rpc-no-credentials"
    ),
    pytest.param(
        {"rpc_cookie_file": None, "rpc_user": "walletsvc"},
        "RPC backend has no credentials",
        id="rpc-user-without-password",
    ),
    pytest.param({"policy_file": None}, "WALLETSVC_POLICY_FILE .* development", id="policy"),
    pytest.param(
        {"policy_file": REPO / "policies" / "default.yaml"},
        "WALLETSVC_POLICY_FILE .* development",
        id="policy-by-path",
    ),
    pytest.param(
        {"chain_backend": "embedded"}, "embedded chain is regtest only", id="embedded-chain"
    ),
]


def _apply(tmp_path: Path, changes: dict[str, Any]) -> dict[str, Any]:
    values = production(tmp_path)
    for key, value in changes.items():
        if value is None:
            values.pop(key)  # back to the default
        else:
            values[key] = value.format(tmp=tmp_path) if isinstance(value, str) else value
    return values


@pytest.mark.parametrize("network", REAL_NETWORKS)
@pytest.mark.parametrize(("changes", "message"), REFUSALS)
def test_each_development_default_is_refused_off_regtest(
    tmp_path: Path, network: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{**_apply(tmp_path, changes), "network": network})


@pytest.mark.parametrize(("changes", "message"), REFUSALS)
def test_regtest_keeps_every_development_default(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    Settings(**{**_apply(tmp_path, changes), "network": "regtest"})


def test_the_controls_pass(tmp_path: Path) -> None:
    """Each refusal has a production way out that the guard accepts."""
    Settings(
        **production(
            tmp_path,
            database_url=f"sqlite:///{tmp_path / 'db' / 'walletsvc.db'}",
            allow_sqlite=True,
        )
    )
    Settings(**production(tmp_path, rpc_cookie_file=None, rpc_user="u", rpc_password="p"))


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(network="mainnet", chain_backend="rpc", data_dir=tmp_path)
    text = str(refused.value)
    for setting in (
        "WALLETSVC_KEK_FILE",
        "WALLETSVC_ALLOW_SQLITE",
        "WALLETSVC_RPC_COOKIE_FILE",
        "WALLETSVC_POLICY_FILE",
    ):
        assert setting in text


def test_regtest_defaults_are_the_development_setup(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.network.value == "regtest"
    assert settings.chain_backend == "embedded"
    assert settings.kek_path == tmp_path / "kek.bin"
    assert settings.database_url == f"sqlite:///{(tmp_path / 'walletsvc.db').resolve()}"
    assert settings.policy_file == development_policy_file()
    assert settings.policy_file.read_text().startswith("# walletsvc policy")


def test_the_policy_file_setting_overrides_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALLETSVC_POLICY_FILE", str(tmp_path / "mine.yaml"))
    assert Settings().policy_file == tmp_path / "mine.yaml"


def test_the_cli_refuses_to_start_with_development_settings_on_mainnet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLETSVC_")}
    env.update(
        WALLETSVC_NETWORK="mainnet",
        WALLETSVC_CHAIN_BACKEND="rpc",
        WALLETSVC_DATA_DIR=str(tmp_path / "data"),
        WALLETSVC_DATABASE_URL=f"sqlite:///{tmp_path / 'data' / 'walletsvc.db'}",
        WALLETSVC_POLICY_FILE=str(tmp_path / "policy.yaml"),
        WALLETSVC_RPC_PASSWORD="not-for-the-terminal",  # no user: refused, and never echoed
    )
    result = subprocess.run(
        [sys.executable, "-m", "walletsvc.cli.main", "migrate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "WALLETSVC_KEK_FILE" in result.stderr
    assert "RPC backend has no credentials" in result.stderr
    assert "not-for-the-terminal" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "walletsvc.db").exists()
