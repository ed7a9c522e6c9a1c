"""Typed errors: every problem+json answer of the API becomes a `DistilleryError` subclass chosen by status.

    from distillery import Client
    from distillery.client.errors import NotFound, ValidationError

    try:
        client.jobs.create(recipe)
    except ValidationError as exc:
        for e in exc.errors:             # the 422's field list
            print(e["field"], e["message"])
    except NotFound:
        ...
"""

from __future__ import annotations

from typing import Any

import httpx


class DistilleryError(Exception):
    """Base class of every error the client raises.

    Attributes mirror RFC 9457 problem details: `status` (None when no HTTP answer came back), `title`,
    `detail`, `type` (e.g. ``urn:distillery:problem:validation_error``), `code` (the type's last part),
    `request_id` (quote it when reporting a problem), `errors` (the 422 field list: dicts with `field`,
    `message` and sometimes `code`), and `response` (the httpx response, when there was one)."""

    def __init__(self, detail: str, *, status: int | None = None, title: str | None = None,
                 type: str | None = None, request_id: str | None = None, errors: list[dict[str, Any]] | None = None,
                 response: httpx.Response | None = None) -> None:
        super().__init__(detail)
        self.detail, self.status, self.title, self.type = detail, status, title, type
        self.request_id, self.errors, self.response = request_id, list(errors or []), response

    @property
    def code(self) -> str | None:
        """The problem's short code: `not_found`, `validation_error`, `idempotency_key_reused`..."""
        return self.type.rsplit(":", 1)[-1] if self.type else None

    def __str__(self) -> str:
        head = f"{self.status} {self.title}: " if self.status and self.title and self.title != self.detail else ""
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}{self.detail}{tail}"


class BadRequest(DistilleryError):
    """400: a malformed request (for example a list cursor the API did not issue)."""


class Unauthorized(DistilleryError):
    """401: the API key is missing, invalid or revoked."""


class Forbidden(DistilleryError):
    """403."""


class NotFound(DistilleryError):
    """404: no such object for this API key's owner (another owner's objects read as missing)."""


class Conflict(DistilleryError):
    """409: the job's state does not allow it (a report before the end, cancelling a finished job)."""


class PayloadTooLarge(DistilleryError):
    """413: the upload is larger than the service's limit."""


class UnsupportedMediaType(DistilleryError):
    """415."""


class RangeNotSatisfiable(DistilleryError):
    """416: a download's Range starts past the end of the content."""


class ValidationError(DistilleryError):
    """422: the request or the uploaded content is invalid; `errors` names the fields."""


class RateLimited(DistilleryError):
    """429: too many requests (retried with backoff before this is raised)."""


class ServerError(DistilleryError):
    """5xx: an error on the service's side; quote `request_id`."""


class ServiceUnavailable(ServerError):
    """503 (and 502/504): the service or its database is briefly unavailable (retried before this is raised)."""


class ConnectionFailed(DistilleryError):
    """No HTTP answer: the service could not be reached, or the connection dropped (after the retries)."""


class ChecksumMismatch(DistilleryError):
    """A downloaded file's sha256 differs from the artifact's; the bad file has been removed."""

    def __init__(self, detail: str, *, expected: str, actual: str, path: str) -> None:
        super().__init__(detail)
        self.expected, self.actual, self.path = expected, actual, path


class WaitTimeout(DistilleryError):
    """`jobs.wait` ran out of time before the job finished; `job` is its last known state."""

    def __init__(self, detail: str, *, job: Any = None) -> None:
        super().__init__(detail)
        self.job = job


_BY_STATUS: dict[int, type[DistilleryError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 416: RangeNotSatisfiable, 422: ValidationError, 429: RateLimited,
    502: ServiceUnavailable, 503: ServiceUnavailable, 504: ServiceUnavailable,
}


def error_class(status: int) -> type[DistilleryError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else DistilleryError


def error_from_response(response: httpx.Response) -> DistilleryError:
    """The typed error for an HTTP error answer; the body is read as problem+json when it is JSON. A streamed
    response must have been read (`response.read()`) first."""
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    status = response.status_code
    title = body.get("title") or response.reason_phrase or f"HTTP {status}"
    detail = body.get("detail") or (response.text.strip()[:500] if not body else "") or title
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    request_id = body.get("request_id") or response.headers.get("x-request-id")
    return error_class(status)(str(detail), status=status, title=str(title), type=body.get("type"),
                               request_id=request_id, errors=errors, response=response)
