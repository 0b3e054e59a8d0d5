"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from walletsvc.api.deps import RuntimeDep
from walletsvc.api.schemas.system import Health, Readiness
from walletsvc.bootstrap.health import readiness

router = APIRouter(tags=["system"])


@router.get("/health")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: a dependency is down"}},
)
def ready(runtime: RuntimeDep) -> JSONResponse:
    ok, body = readiness(runtime)
    # exclude_unset: an unavailable chain has no height or hash, and says so by their absence.
    view = Readiness.model_validate(body).model_dump(mode="json", exclude_unset=True)
    return JSONResponse(view, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    # A plain Response: the body is Prometheus text, described below, never JSON.
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
