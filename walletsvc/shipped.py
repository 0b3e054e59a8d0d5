"""Files walletsvc ships beside its code: the Alembic migrations and the development policy.

The repository keeps them at the top level (``alembic/``, ``policies/``); the wheel installs them
inside the package as ``walletsvc/_migrations`` and ``walletsvc/_policies`` (pyproject.toml,
``[tool.setuptools] package-dir``), so an installed walletsvc needs no source checkout. From a
checkout (an editable install or PYTHONPATH) the top-level directories are used as they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def migrations_dir() -> Path:
    """Alembic's script location: env.py, script.py.mako and versions/."""
    return _shipped("_migrations", "alembic", marker="env.py")


def development_policy_file() -> Path:
    """The regtest development policy ``init`` installs when no other is given."""
    return _shipped("_policies", "policies", marker="default.yaml") / "default.yaml"


def _shipped(installed_name: str, checkout_name: str, *, marker: str) -> Path:
    # Alembic and open() need real files; a wheel installed into a directory has them.
    package = Path(str(resources.files("walletsvc")))
    for candidate in (package / installed_name, package.parent / checkout_name):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(
        f"walletsvc is installed without its {checkout_name}/ files "
        f"(looked in {package / installed_name} and {package.parent / checkout_name})"
    )
