"""The application factory: routers, problem+json errors, request ids, CORS and request metrics."""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI

from .. import errors
from ..settings import Settings, get_settings
from . import artifacts, dashboard, datasets, events, health, jobs, models, owner_events
from .cors import EXPOSED, ProblemCORSMiddleware
from .metrics import REQUEST_LATENCY


class RequestContext:
    """Pure ASGI middleware (streams pass through untouched): a request id on every response, echoed
    from X-Request-ID when the caller sends one, and the request's latency in the metrics."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 100 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_LATENCY.labels(scope["method"], route_template(scope), str(status["code"])).observe(
                time.perf_counter() - start)


def route_template(scope) -> str:
    """The matched route's full path template ("/v1/jobs/{job_id}"): a label of few values, whatever the ids.
    A route of an included router knows only its path inside that router ("/jobs/{job_id}"), so create_app
    records the prefix it included each route under."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    prefixes = getattr(scope["app"].state, "route_prefixes", {})
    return prefixes.get(id(route), "") + getattr(route, "path", "")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Distillery",
        version="0.1.0",
        description="Distil, prune and quantize models; see what each step cost, task by task.",
        openapi_tags=[{"name": n} for n in ("models", "datasets", "jobs", "artifacts", "health")],
    )
    app.state.settings = settings
    app.state.route_prefixes = {}
    errors.install(app)
    for module in (models, datasets, jobs, events, artifacts, owner_events):
        app.include_router(module.router, prefix="/v1")
        app.state.route_prefixes.update({id(route): "/v1" for route in module.router.routes})
    app.include_router(health.router)
    dashboard.install(app)
    # Added first, so innermost: the others wrap what it answers (the last added is the outermost).
    app.add_middleware(errors.InternalErrors)
    if settings.cors_origins:
        app.add_middleware(ProblemCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=EXPOSED)
    app.add_middleware(RequestContext)
    return app
