"""One error hierarchy for the service, mapped to RFC 9457 problem+json in one place (`install`)."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.engine.recipe import drop_union_tags

log = logging.getLogger("distillery.api")
PROBLEM = "application/problem+json"


class AppError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict] | None = None, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.detail, self.errors, self.headers = detail, errors, headers


class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class Unprocessable(AppError):
    status, code, title = 422, "validation_error", "The request cannot be processed"


class RangeNotSatisfiable(AppError):
    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"


class Unavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"


def problem(request: Request, status: int, code: str, title: str, detail: str, *, errors: list | None = None,
            headers: dict | None = None, extra: dict | None = None) -> JSONResponse:
    """The problem+json response; `extra` adds members of the problem type (RFC 9457 extensions)."""
    body = {
        "type": f"urn:distillery:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple) -> str:
    # union tags out too ("stages.0.distill.epochz" reads "stages.0.epochz"), so a 422 names the field as written
    loc = drop_union_tags(loc, frozenset({"registered", "unregistered"}))
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "header"))


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError):
        return problem(request, exc.status, exc.code, exc.title, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return problem(request, 422, "validation_error", "The request cannot be processed", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first route on the path; RFC 9110 wants all
            headers["Allow"] = ", ".join(_allowed(request)) or headers.get("Allow", "")
        return problem(request, exc.status_code, code, str(exc.detail), str(exc.detail), headers=headers)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError):
        log.warning("database unavailable: %s", exc.orig)
        return problem(request, 503, "database_unavailable", "Service unavailable",
                       "the database cannot be reached; retry shortly", headers={"Retry-After": "2"})

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, exc: PoolTimeout):
        log.warning("database connection pool exhausted: %s", exc)
        return problem(request, 503, "overloaded", "Service unavailable",
                       "too many requests at once for the database; retry shortly", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        # Only for errors raised in the outer middleware: InternalErrors answers everything else.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error(request)


def internal_error(request: Request) -> JSONResponse:
    return problem(request, 500, "internal_error", "Internal error",
                   "an unexpected error occurred; quote the request id when reporting it")


class InternalErrors:
    """The innermost middleware: an unhandled exception becomes the problem+json 500 here, so that the answer
    passes out through the request-id and CORS middleware and carries their headers. (Starlette's
    ServerErrorMiddleware, which runs an `Exception` handler, sits outside every middleware.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # failed mid-body: too late for another answer; the server drops the connection
                raise
            request = Request(scope)
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            await internal_error(request)(scope, receive, send)


def _allowed(request: Request) -> list[str]:
    """Every method any route serves at this path, from the app's OpenAPI document (cached by FastAPI)."""
    methods: set[str] = set()
    for template, ops in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {m.upper() for m in ops if m in ("get", "head", "post", "put", "patch", "delete")}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
