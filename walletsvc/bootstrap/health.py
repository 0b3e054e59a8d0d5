"""Readiness: can this process serve (database, chain, signer) and is anything frozen."""

from __future__ import annotations

from typing import Any

from walletsvc.bootstrap.runtime import Runtime
from walletsvc.incident.freeze import freeze_overview


def readiness(runtime: Runtime, *, detail: bool = True) -> tuple[bool, dict[str, Any]]:
    """(ready?, the body of ``GET /ready``).

    Without ``detail`` the body is only ``{"ready": ...}``: the checks and the freeze state
    (its reasons and who froze) are for authenticated callers, not for anyone who can reach
    the port.
    """
    checks: dict[str, Any] = {}
    try:
        runtime.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        tip = runtime.chain.tip()
        checks["chain"] = {"status": "ok", "height": tip.height, "hash": tip.hash}
    except Exception as exc:
        checks["chain"] = {"status": f"unavailable: {type(exc).__name__}"}
    try:
        runtime.signer.status()
        checks["signer"] = "ok"
    except Exception:
        checks["signer"] = "unavailable"
    ok = (
        checks["database"] == "ok"
        and checks["chain"].get("status") == "ok"
        and checks["signer"] == "ok"
    )
    if not detail:
        return ok, {"ready": ok}
    body: dict[str, Any] = {"ready": ok, "checks": checks, "freeze": None}
    if checks["database"] == "ok":
        body["freeze"] = freeze_overview(runtime.db)
    return ok, body
