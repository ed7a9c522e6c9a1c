"""Routes whose blocking endpoints hold a database connection only while they hold a worker thread.

FastAPI runs a plain `def` endpoint in the threadpool (40 threads), and then validates and serialises its
return value in a SECOND threadpool hop, while the request's session, which the function-scoped dependency
closes only after serialisation, still holds its pooled connection. Under load (200 clients), sessions
waiting for a thread to serialise hold every connection while every thread waits for a connection: the
service stalls until the pool times out. Wrapping the endpoint in a coroutine that makes one hop for the
body keeps serialisation on the event loop, so a connection holder never waits for a thread.

A router may also cap its routes' bodies (`max_body`): the body is read here, counted chunk by chunk, before
FastAPI parses it, so an oversized one is refused with a problem+json 413 without being read to the end.
FastAPI's own `max_body_size` answers a declared oversized Content-Length with a plain-text 413 instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..errors import BadRequest, PayloadTooLarge


def _one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the signature and annotations through __wrapped__
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body ({declared} bytes) is larger than this endpoint's limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is larger than this endpoint's limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, not a 500 (FastAPI's own body reading answers 400 too)
        raise BadRequest(f"the client went away after {size} bytes of the body") from None
    return b"".join(chunks)


class _ReadRequest(Request):
    """A request whose body has been read already; FastAPI's body() returns it (Starlette's own cache)."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)  # receive still tells of a disconnect
        self._body = body


class OneHopRoute(APIRoute):
    max_body: int | None = None  # bytes; set by api_router(max_body=...)

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint) and not inspect.isasyncgenfunction(endpoint):
            endpoint = _one_hop(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        limit = self.max_body
        if limit is None or self.body_field is None:
            return handler

        async def capped(request: Request) -> Response:
            # Raised here, before FastAPI's body parsing (which would turn any error into a 400).
            return await handler(_ReadRequest(request, await read_capped(request, limit)))

        return capped


def api_router(*, max_body: int | None = None, **kwargs: Any) -> APIRouter:
    """The router every API module uses; `max_body` caps the body of each of its routes that takes one."""
    route_class = OneHopRoute if max_body is None else type("CappedRoute", (OneHopRoute,), {"max_body": max_body})
    return APIRouter(route_class=route_class, **kwargs)
