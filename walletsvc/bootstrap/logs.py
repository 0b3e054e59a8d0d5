"""The service's logs: one JSON object per line, through structlog, configured once at start.

Every record goes through the same pipeline, structlog's own and the standard library's
(uvicorn, SQLAlchemy, our modules' ``logging.getLogger``), so the log holds one format.
Values bound with ``structlog.contextvars`` (the request id, per request) join each line.
The CLI keeps its human text (walletsvc.cli.main).

No secrets: nothing logs request headers or bodies, and the processor below drops any field
whose name says it holds a credential, in case one is ever passed by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

_SECRET_FIELDS = frozenset(
    {"authorization", "password", "totp", "token", "secret", "api_token", "seed"}
)


def _drop_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [k for k in event if k.lower() in _SECRET_FIELDS]:
        event[key] = "[redacted]"
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_secrets,
]


def configure_service_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """JSON lines on ``stream`` (stderr by default) for structlog and stdlib loggers alike."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_SHARED],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # uvicorn's own handlers would print a second, plain-text copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
