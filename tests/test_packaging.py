"""The wheel carries everything an installed walletsvc needs: it migrates and inits without a
checkout (the migrations and the development policy are package data, walletsvc/shipped.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from alembic.script import ScriptDirectory

from walletsvc.db.migrate import alembic_config

REPO = Path(__file__).resolve().parents[1]
# What the build reads; copied so that the build leaves nothing (build/, *.egg-info) in the tree.
BUILD_INPUTS = ("pyproject.toml", "README.md", "walletsvc", "alembic", "policies")
# Where the wheel installs the directories that live outside walletsvc/ in the repository.
INSTALLED_AS = {"alembic": "walletsvc/_migrations", "policies": "walletsvc/_policies"}

PROBE = """
import walletsvc
from walletsvc.config import Settings
from walletsvc.shipped import migrations_dir
print(walletsvc.__file__)
print(migrations_dir())
print(Settings().policy_file)
"""


def _require_build_tools() -> None:
    if (
        importlib.util.find_spec("wheel") is None
        or int(metadata.version("setuptools").split(".")[0]) < 68
    ):
        pytest.skip("building the wheel needs setuptools>=68 and wheel: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_build_tools()
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(dist), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = dist.glob("walletsvc-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def _installed_env(site: Path, workdir: Path) -> dict[str, str]:
    """This interpreter (it has the dependencies) with only the installed wheel on the path.

    The checkout is neither on PYTHONPATH nor the working directory; the editable install's
    finder comes after PYTHONPATH on the import path, and the probe checks it did not win.
    """
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WALLETSVC_") and k != "PYTHONPATH"
        },
        "PYTHONPATH": str(site),
        "WALLETSVC_DATA_DIR": str(workdir / "data"),
        "WALLETSVC_DATABASE_URL": f"sqlite:///{workdir / 'walletsvc.db'}",
    }


def _run(site: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=_installed_env(site, workdir),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _source_packages() -> set[str]:
    """Every directory with Python modules or package data, named as the wheel installs it."""
    found: set[str] = set()
    for top in ("walletsvc", *INSTALLED_AS):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                parent = path.parent.relative_to(REPO).as_posix()
                found.add(INSTALLED_AS.get(top, top) + parent[len(top) :])
    return found


def test_the_wheel_holds_every_package_and_no_phantom_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    installed = {str(PurePosixPath(n).parent) for n in names if n.startswith("walletsvc/")}
    assert _source_packages() - installed == set(), "add the package to pyproject.toml"
    for shipped in (
        "walletsvc/py.typed",
        "walletsvc/policy/schema.json",
        "walletsvc/_migrations/env.py",
        "walletsvc/_migrations/script.py.mako",
        "walletsvc/_policies/default.yaml",
        "walletsvc/api/console/templates/base.html",
        "walletsvc/api/console/static/console.css",
        "walletsvc/api/console/static/passkeys.js",
    ):
        assert shipped in names
    versions = {PurePosixPath(n).name for n in names if n.startswith("walletsvc/_migrations/v")}
    assert versions == {p.name for p in (REPO / "alembic" / "versions").glob("*.py")}


def test_an_installed_wheel_migrates_and_inits_outside_the_checkout(
    site: Path, tmp_path: Path
) -> None:
    probe = _run(site, tmp_path, sys.executable, "-P", "-c", PROBE)
    assert probe.returncode == 0, probe.stderr
    package, migrations, policy = (Path(line) for line in probe.stdout.splitlines())
    assert package.is_relative_to(site), f"imported {package}, not the installed wheel"
    assert migrations == site / "walletsvc" / "_migrations"
    assert policy == site / "walletsvc" / "_policies" / "default.yaml"

    # The console script pip installed, as an operator would run it.
    migrate = _run(site, tmp_path, str(site / "bin" / "walletsvc"), "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "database at head" in migrate.stdout

    database = tmp_path / "walletsvc.db"
    head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{database}")).get_current_head()
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"wallets", "withdrawals", "policy_versions", "audit_events"} <= tables

    # init installs the development policy the wheel ships (regtest: no policy file given).
    init = _run(site, tmp_path, str(site / "bin" / "walletsvc"), "init", "--wallet", "w1")
    assert init.returncode == 0, init.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM policy_versions").fetchone() == (1,)
