"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from walletsvc.api.deps import RuntimeDep
from walletsvc.bootstrap.health import readiness

router = APIRouter(tags=["system"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
def ready(runtime: RuntimeDep) -> JSONResponse:
    ok, body = readiness(runtime)
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
