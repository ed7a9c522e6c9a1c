"""Routes whose blocking endpoints hold a database connection only while they hold a worker thread.

FastAPI runs a plain `def` endpoint in the threadpool (40 threads), and then validates and serialises its
return value in a SECOND threadpool hop, while the request's session, which the function-scoped dependency
closes only after serialisation, still holds its pooled connection. Under load (200 clients), sessions
waiting for a thread to serialise hold every connection while every thread waits for a connection: the
service stalls until the pool times out. Wrapping the endpoint in a coroutine that makes one hop for the
body keeps serialisation on the event loop, so a connection holder never waits for a thread.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool


def _one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the signature and annotations through __wrapped__
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run


class OneHopRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint) and not inspect.isasyncgenfunction(endpoint):
            endpoint = _one_hop(endpoint)
        super().__init__(path, endpoint, **kwargs)


def api_router(**kwargs: Any) -> APIRouter:
    """The router every API module uses."""
    return APIRouter(route_class=OneHopRoute, **kwargs)
