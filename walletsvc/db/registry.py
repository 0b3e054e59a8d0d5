"""Imports every model module so that Base.metadata knows every table (Alembic, tests).

Each area keeps its tables in its own module; add one import line here per module.
"""

from walletsvc.db import (
    models,  # noqa: F401
    models_governance,  # noqa: F401
    models_incident,  # noqa: F401
    models_risk,  # noqa: F401
    models_staff_auth,  # noqa: F401
    models_treasury,  # noqa: F401
    models_webhooks,  # noqa: F401
)
from walletsvc.db.models import Base

metadata = Base.metadata
