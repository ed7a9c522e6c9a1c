"""The browser dashboard: static files under app/static, served at `/` (the page) and `/ui/` (its modules
and styles). It uses only the public API with the user's key, like any other client.

Explicit routes rather than a catch-all mount at `/`, so that routes added later are never shadowed and
unknown /v1 paths stay problem+json 404s.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[1] / "static"

# No inline scripts or styles, nothing from another origin; the page talks only to this API.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        # revalidate every time (ETag answers 304): a new release is picked up without a hard reload
        response.headers["Cache-Control"] = "no-cache"
        return response


def _index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={**HEADERS, "Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.add_api_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/ui", _Assets(directory=STATIC), name="dashboard")
