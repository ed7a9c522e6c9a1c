"""Liveness, readiness (database and broker reachable) and Prometheus metrics.

/healthz and /readyz never wait behind request work: they are coroutines, so they take no thread from the
threadpool that slow requests fill, and /readyz runs its two checks on a small executor of its own, each given
up after CHECK_SECONDS (a dependency that does not answer by then is reported as not ready, promptly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from .. import errors
from ..db.base import get_engine
from .docs import Problem, problem_example, problems
from .metrics import REGISTRY, StateCollector, authorize_scrape
from .routing import api_router
from .schemas_assets import inline_schema

router = api_router(tags=["health"])
CHECK_SECONDS = 2.0
# Its own threads: a check stuck on a dead connection holds one of these, never a request thread.
_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
_state = StateCollector()
REGISTRY.register(_state)


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: Literal["ok"]


class Ready(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready",
                                                              "checks": {"database": "ok", "broker": "ok"}}]})
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="each dependency: ok, or error: <the exception's class>")


class NotReady(Problem):
    """The problem+json of a 503 from /readyz: `checks` says which dependency is unreachable."""

    checks: dict[str, str] = Field(description="each dependency: ok, or error: <the exception's class>")


NOT_READY_EXAMPLE = problem_example(503, type="urn:distillery:problem:not_ready", title="Not ready",
                                    detail="unreachable: broker (ConnectionError)", instance="/readyz",
                                    checks={"database": "ok", "broker": "error: ConnectionError"})
METRICS_EXAMPLE = """# HELP distillery_jobs Jobs by state
# TYPE distillery_jobs gauge
distillery_jobs{state="running"} 1.0
distillery_jobs{state="succeeded"} 12.0
# TYPE distillery_stage_duration_seconds histogram
distillery_stage_duration_seconds_bucket{kind="distill",le="60.0"} 3.0
distillery_stage_duration_seconds_bucket{kind="distill",le="+Inf"} 12.0
distillery_stage_duration_seconds_count{kind="distill"} 12.0
distillery_stage_duration_seconds_sum{kind="distill"} 2210.5
# TYPE distillery_queue_depth gauge
distillery_queue_depth{queue="gpu"} 2.0
distillery_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}",status="200"} 431.0
"""


@router.get("/healthz", summary="The process is up", response_model=Health)
async def healthz() -> Health:  # on the event loop: no thread to wait for
    return Health(status="ok")


def _database(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()


async def _check(fn: Callable[[str], None], arg: str) -> str:
    """ok, or error: <the exception's class>; TimeoutError when it did not answer within CHECK_SECONDS."""
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_CHECKS, fn, arg), CHECK_SECONDS)
    except Exception as exc:  # any failure means not ready; say which
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/readyz", summary="The database and the broker are reachable", response_model=Ready,
            responses={503: {"description": "a dependency is unreachable; `checks` says which",
                             "content": {"application/problem+json": {"schema": inline_schema(NotReady),
                                                                      "example": NOT_READY_EXAMPLE}}}})
async def readyz(request: Request) -> Response:
    settings = request.app.state.settings
    database, broker = await asyncio.gather(_check(_database, settings.sqlalchemy_url),
                                            _check(_broker, settings.redis_url))
    checks = {"database": database, "broker": broker}
    down = [name for name, state in checks.items() if state != "ok"]
    if not down:
        return JSONResponse(Ready(status="ready", checks=checks).model_dump())
    detail = "unreachable: " + ", ".join(f"{name} ({checks[name].removeprefix('error: ')})" for name in down)
    return errors.problem(request, 503, "not_ready", "Not ready", detail, extra={"checks": checks})


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            description="Jobs by state, stage durations (a histogram per stage kind), queue depth and request "
                        "latency by route template, in the Prometheus text format. Every tenant's jobs are "
                        "counted, so no API key opens it: with DISTILLERY_METRICS_TOKEN set, send that token "
                        "as `Authorization: Bearer ...` (401 otherwise); unset, only clients on the server's "
                        "own host are answered (403 otherwise, and to any request a proxy forwarded).",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}}},
                       **problems(401, 403, examples={401: problem_example(
                           401, instance="/metrics", detail="send the metrics token as 'Authorization: Bearer "
                           "<DISTILLERY_METRICS_TOKEN>'")})})
def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    authorize_scrape(request, settings.metrics_token.get_secret_value() if settings.metrics_token else None)
    _state.settings = settings  # read at scrape time, from this app's database
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
