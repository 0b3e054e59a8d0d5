"""Response bodies of the system endpoints: liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from walletsvc.api.schemas.base import ResponseModel
from walletsvc.api.schemas.incident import FreezeState


class Health(ResponseModel):
    status: Literal["ok"]


class ChainCheck(ResponseModel):
    status: str = Field(description="`ok`, or `unavailable: <error type>`.")
    height: int | None = Field(default=None, description="The tip; absent when unavailable.")
    hash: str | None = Field(default=None, description="The tip; absent when unavailable.")


class ReadinessChecks(ResponseModel):
    database: str = Field(description="`ok`, or `unavailable: <error type>`.")
    chain: ChainCheck
    signer: str = Field(description="`ok` or `unavailable`.")


class Readiness(ResponseModel):
    """``ready`` for everyone; ``checks`` and ``freeze`` only for an authenticated caller."""

    ready: bool
    checks: ReadinessChecks | None = Field(
        default=None, description="Absent unless the caller is authenticated."
    )
    freeze: FreezeState | None = Field(
        default=None,
        description="Absent unless the caller is authenticated; null when the database is "
        "unavailable.",
    )
