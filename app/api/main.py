"""The application factory: routers, problem+json errors, request ids, CORS and request metrics."""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import errors
from ..settings import Settings, get_settings
from . import artifacts, dashboard, datasets, events, health, jobs, models, owner_events
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
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(scope["method"], path, str(status["code"])).observe(time.perf_counter() - start)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Distillery",
        version="0.1.0",
        description="Distil, prune and quantize models; see what each step cost, task by task.",
        openapi_tags=[{"name": n} for n in ("models", "datasets", "jobs", "artifacts", "health")],
    )
    app.state.settings = settings
    errors.install(app)
    for module in (models, datasets, jobs, events, artifacts, owner_events):
        app.include_router(module.router, prefix="/v1")
    app.include_router(health.router)
    dashboard.install(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["ETag", "Location", "X-Request-ID",
                                                                 "Content-Disposition", "Accept-Ranges"])
    app.add_middleware(RequestContext)
    return app
