"""Liveness, readiness (database and broker reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..db.base import get_engine
from .metrics import REGISTRY, StateCollector
from .routing import api_router

router = api_router(tags=["health"])
_state = StateCollector()
REGISTRY.register(_state)


@router.get("/healthz", summary="The process is up")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the broker are reachable",
            responses={503: {"description": "a dependency is down"}})
def readyz(request: Request) -> JSONResponse:
    import redis

    settings = request.app.state.settings
    checks: dict[str, str] = {}
    try:
        with get_engine(settings.sqlalchemy_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1).ping()
        checks["broker"] = "ok"
    except redis.RedisError as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    _state.settings = request.app.state.settings  # read at scrape time, from this app's database
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
