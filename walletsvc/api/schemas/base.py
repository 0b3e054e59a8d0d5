"""What every response body shares: a closed, strict model and the timestamp type."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictStr, WithJsonSchema


class ResponseModel(BaseModel):
    """A response body, built from a use case's view with ``model_validate``.

    Closed (``extra="forbid"``) because FastAPI filters output through the response model: a
    field the view has and the model lacks would silently vanish from the JSON, so it fails
    loudly instead. Strict, so a value is never coerced (a ``bool`` never turns into ``1``).
    Fields without defaults are required: the model never adds a key the view did not have.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


# The views format times themselves (``datetime.isoformat()`` of a UTC time); the schema
# says what the string is. Declared as a string so the JSON stays byte-for-byte as before.
Timestamp = Annotated[StrictStr, WithJsonSchema({"type": "string", "format": "date-time"})]
