"""Request bodies (here) and response bodies (the modules of this package, one per area).

Request bodies use strict types: a float or a string is never silently turned into money.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, StrictStr

# The largest sequence number or offset a query may name: both databases compare them as
# signed 64-bit integers, and a larger one would fail in the driver (a 500), not answer 422.
MAX_SEQUENCE = 2**63 - 1


def _no_control_characters(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and no name, address or reference needs control
    # characters: refuse them at the edge rather than fail deep in the database.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("control characters are not allowed")
    return value


Text = Annotated[StrictStr, AfterValidator(_no_control_characters)]


def _no_control_characters_but_lines(value: str) -> str:
    # Reasons and comments may span lines and hold tabs; never NUL or other controls.
    if any((ord(ch) < 0x20 and ch not in "\t\n\r") or ord(ch) == 0x7F for ch in value):
        raise ValueError("control characters other than tab and newline are not allowed")
    return value


# Free text written by people (a freeze reason, an approver's comment).
Prose = Annotated[StrictStr, AfterValidator(_no_control_characters_but_lines)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WithdrawalCreate(StrictModel):
    wallet: Text
    destination: Text
    amount_sat: StrictInt
    reference: Text | None = None


class DepositAddressCreate(StrictModel):
    label: Text | None = None
