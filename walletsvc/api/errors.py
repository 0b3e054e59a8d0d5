"""The one place where errors become HTTP: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from walletsvc.api.request_ids import HEADER, request_id_for
from walletsvc.api.schemas.rounds import DeniedPayoutView
from walletsvc.api.schemas.withdrawals import PolicyDecision
from walletsvc.domain import errors as e
from walletsvc.governance.audit import record_integrity_failure
from walletsvc.governance.policies import IntegrityFailure

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[e.DomainError], int]] = [
    (e.IdempotencyConflict, 409),
    (e.InvalidTransition, 409),
    (e.Conflict, 409),
    (e.InvalidInput, 422),
    (e.NotFound, 404),
    (e.Unauthenticated, 401),
    (e.Forbidden, 403),
    (e.Frozen, 423),
    (e.RateLimited, 429),
    (e.DependencyUnavailable, 503),
    (e.InsufficientFunds, 409),
    (e.PolicyDenied, 422),
    (e.ChainRejected, 502),
    # A governed row fails its KEK-keyed tag (or no policy is installed): the service refuses
    # to act until an operator looks; nothing the client can fix.
    (IntegrityFailure, 500),
]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: str = Field(description="Stable and machine-readable: `not_found`, `frozen`, …")
    message: str = Field(description="For people; never carries secrets or a stack trace.")
    field: str | None = Field(description="The input to fix (`amount_sat`, `Idempotency-Key`, …).")
    decision: PolicyDecision | None = Field(
        default=None, description="Only with `policy_denied`: the decision that denied it."
    )
    payouts: list[DeniedPayoutView] | None = Field(
        default=None,
        description="Only when a payout round is refused: each denied payout and its rules.",
    )


class ErrorBody(BaseModel):
    """Every error the service answers, whatever its status."""

    model_config = ConfigDict(extra="forbid", strict=True)

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "No, unknown or revoked credentials",
    403: "Authenticated but not allowed (or a wrong step-up TOTP code)",
    404: "No such resource",
    409: "A conflict with the current state, or an idempotency key reused with another body",
    422: "Bad input (type, amount, address, missing header) or a policy denial",
    423: "Frozen",
    429: "Rate limited, or the staff account is locked",
    500: "Internal error, or a governed row fails its integrity check",
    502: "The chain rejected the transaction",
    503: "A dependency is down",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the one error body. Declaring
    422 also replaces FastAPI's default validation error schema, which this service never
    sends (payload validation errors are rendered as ErrorBody below)."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def status_for(exc: e.DomainError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, field: str | None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _field_from_location(loc: tuple[Any, ...]) -> str | None:
    """The field as clients write it: ``amount_sat``, ``payouts[17].amount_sat``."""
    field = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    return field or None


def _is_amount(field: str | None) -> bool:
    return field is not None and (field == "amount_sat" or field.endswith(".amount_sat"))


def _validation_message(err: dict[str, Any], field: str | None) -> str:
    if _is_amount(field):
        return f"{field} must be a JSON integer number of satoshis (no decimals, no strings)"
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    if err.get("type") == "missing":
        return f"{field} is required"
    if err.get("type") == "extra_forbidden":
        return f"{field} is not a recognised field"
    return f"{field}: {err.get('msg', 'invalid value')}"


def _record_integrity_failure(request: Request, exc: IntegrityFailure) -> None:
    """A governed row failed its check on the way to a use: the use case rolled back, so the
    finding is audited here, once for every use case (the risk monitor freezes on it)."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return
    try:
        record_integrity_failure(runtime.db, exc.message)
    except Exception:  # the database may be what is broken; the answer still goes out
        log.exception("could not audit an integrity failure")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.DomainError)
    async def _domain(request: Request, exc: e.DomainError) -> JSONResponse:
        if isinstance(exc, IntegrityFailure):
            await run_in_threadpool(_record_integrity_failure, request, exc)
        extra: dict[str, Any] = {}
        decision = getattr(exc, "decision", None)
        if decision is not None:
            extra["decision"] = decision.to_dict()
        denied_payouts = getattr(exc, "payouts", None)  # a refused payout round
        if denied_payouts is not None:
            extra["payouts"] = denied_payouts
        headers = {}
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field, **extra),
            status_code=status_for(exc),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _field_from_location(tuple(first.get("loc", ())))
        code = "invalid_amount" if _is_amount(field) else "invalid_input"
        if first.get("type") == "json_invalid":
            code, field = "invalid_json", None
        return JSONResponse(
            error_body(code, _validation_message(first, field), field), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's own 400: a body it could not decode (not UTF-8, say). Answered as the
            # invalid JSON it is (422, as a syntax error is), the status the document declares.
            message = "the request body is not valid JSON (it must be UTF-8 encoded JSON)"
            return JSONResponse(error_body("invalid_json", message, None), status_code=422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail), None), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its type only: exception text could carry data we must not leak.
        request_id = request_id_for(request)
        log.error("unhandled %s in request %s", type(exc).__name__, request_id, exc_info=exc)
        # Answered outside the request-id middleware (Starlette's outermost layer), so the
        # header is set here.
        return JSONResponse(
            error_body("internal_error", "internal error; see the service log", None),
            status_code=500,
            headers={HEADER: request_id},
        )
