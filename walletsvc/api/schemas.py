"""Request bodies. Strict types: a float or a string is never silently turned into money."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WithdrawalCreate(StrictModel):
    wallet: StrictStr
    destination: StrictStr
    amount_sat: StrictInt
    reference: StrictStr | None = None


class DepositAddressCreate(StrictModel):
    label: StrictStr | None = None
