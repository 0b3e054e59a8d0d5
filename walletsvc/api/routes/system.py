"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from walletsvc.api.deps import RuntimeDep, authenticate
from walletsvc.api.schemas.system import Health, Readiness
from walletsvc.bootstrap.health import readiness
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.state_metrics import state_registry

router = APIRouter(tags=["system"])


@router.get("/health")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: a dependency is down"}},
)
def ready(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """`{"ready": …}` for anyone; the checks and the freeze state for an authenticated caller
    (any valid API token or staff session)."""
    ok, body = readiness(runtime, detail=_is_authenticated(request, runtime))
    # exclude_unset: an unavailable chain has no height or hash, and says so by their absence.
    view = Readiness.model_validate(body).model_dump(mode="json", exclude_unset=True)
    return JSONResponse(view, status_code=200 if ok else 503)


def _is_authenticated(request: Request, runtime: Runtime) -> bool:
    """Whether the caller proved who they are. A probe without credentials, or with bad
    ones, still gets its answer (ready or not), just not the detail."""
    if "authorization" not in request.headers:
        return False
    try:
        authenticate(request, runtime)
    except Exception:  # bad credentials, or the database that would check them is down
        return False
    return True


METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text format",
        "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
    }
}


def prometheus_text(runtime: Runtime) -> Response:
    """The process's counters and histograms, then the state gauges read from the database."""
    body = generate_latest(REGISTRY) + generate_latest(state_registry(runtime))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# A plain Response: the body is Prometheus text, described below, never JSON.
@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSE)
def metrics(runtime: RuntimeDep) -> Response:
    return prometheus_text(runtime)


# Prometheus' conventional path, outside the versioned API (same content).
root_router = APIRouter(tags=["system"])


@root_router.get("/metrics", response_class=Response, responses=METRICS_RESPONSE)
def root_metrics(runtime: RuntimeDep) -> Response:
    return prometheus_text(runtime)
