"""CORS for dashboards on other origins: Starlette's middleware, with a refused preflight answered in
problem+json like every other error (Starlette sends a text/plain 400)."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .. import errors

# What a browser script may read of a response: ids, links, validators, ranges and retry hints.
EXPOSED = ["X-Request-ID", "Location", "ETag", "Content-Disposition", "Content-Range", "Accept-Ranges",
           "Retry-After", "Allow"]


class _RefusedPreflight(Response):
    """Starlette's refusal (its status and CORS headers kept) as problem+json. The body is made when sent,
    since the request id and path are in the scope, which preflight_response does not see."""

    def __init__(self, refusal: Response) -> None:
        super().__init__(status_code=refusal.status_code)
        self.reason = bytes(refusal.body).decode()  # "Disallowed CORS origin, headers"
        self.cors_headers = {k: v for k, v in refusal.headers.items() if k not in ("content-length", "content-type")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"{self.reason}: this preflight asks for what the API's CORS settings do not allow"
        response = errors.problem(Request(scope), self.status_code, "cors_refused", "CORS preflight refused", detail,
                                  headers=self.cors_headers)
        await response(scope, receive, send)


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        return _RefusedPreflight(response) if response.status_code >= 400 else response
