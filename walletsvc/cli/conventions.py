"""What every `walletsvc` command shares: who the operator is, and how help shows values.

Audit actor: CLI actions are recorded under the operator's OS account (`cli:<user>`): the
person behind `sudo -u walletsvc …` (``SUDO_USER``), else ``getpass.getuser()`` (LOGNAME,
USER, … then the password database), so a shell without $USER still names someone.

Help: typer prints a Python type beside every option (`--reject <bool>`, `--scope
<list[str]>`), which reads as if flags took values. ``use_plain_help()`` replaces that column:
nothing for flags, the choices for a choice, else the option's name in capitals
(`--scope SCOPE`), as click and most Unix tools do. It patches typer's own display method
because typer has no setting for it; the patch is one function, applied once at start.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

import typer.core


def operator_actor() -> str:
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user:
        return f"cli:{sudo_user}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container): name the uid
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


def _plain_value_name(param: Any, ctx: Any) -> str | None:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None  # a flag takes no value
    if param.metavar is not None:
        return str(param.metavar)
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.is_choice:
        label = str(param.display_type(ctx)).strip("<>")
        return label.removeprefix("list[").removesuffix("]")
    return str(param.name or "value").upper()


def use_plain_help() -> None:
    for cls in (typer.core.TyperOption, typer.core.TyperArgument):
        cls.display_type_rich = _plain_value_name  # type: ignore[method-assign,assignment]
