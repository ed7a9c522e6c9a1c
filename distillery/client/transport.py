"""HTTP plumbing shared by Client and AsyncClient: auth headers, typed errors and retries.

Retries apply only to calls that are safe to repeat: GETs, and the few POSTs the API makes idempotent
(`POST /v1/jobs` with its Idempotency-Key, and cancel). They happen on 429 and 502/503/504 answers (honouring
`Retry-After`) and on connection errors, with exponential backoff and jitter. Uploads and registrations are
sent once: a failure is raised at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import ConnectionFailed, DistilleryError, error_from_response

log = logging.getLogger("distillery.client")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "distillery-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first; waits of `backoff` * 2^attempt seconds (at most `max_backoff`),
    half of it random so that many clients do not retry in step; a server's Retry-After is honoured up to
    `max_retry_after` seconds."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        if response is not None and (after := retry_after(response)) is not None:
            return min(after, self.max_retry_after)
        step = min(self.max_backoff, self.backoff * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either delay-seconds or an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=min(timeout, 10.0))


def _connection_failed(method: str, base: httpx.URL, path: str, exc: httpx.TransportError) -> ConnectionFailed:
    url = str(base).rstrip("/") + path if path.startswith("/") else path
    return ConnectionFailed(f"{method} {url}: {type(exc).__name__}: {exc or 'no answer'}")


def _should_retry(idempotent: bool, attempt: int, policy: RetryPolicy, status: int | None) -> bool:
    return idempotent and attempt < policy.retries and (status is None or status in RETRY_STATUSES)


class SyncTransport:
    """An httpx.Client with the base URL and key, whose `request` retries what is safe and raises typed
    errors for 4xx/5xx answers."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float | httpx.Timeout, policy: RetryPolicy,
                 event_hooks: Mapping[str, list] | None = None, sleep=time.sleep) -> None:
        self.policy, self.sleep = policy, sleep
        self.http = httpx.Client(base_url=url, headers=_headers(api_key), timeout=_timeout(timeout),
                                 event_hooks=dict(event_hooks or {}))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                self.sleep(_wait_or_raise(self, method, path, idempotent, attempt, exc))
                continue
            if response.status_code < 400:
                return response
            self.sleep(_wait_or_raise(self, method, path, idempotent, attempt, response))

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status is below 400 (an error is read and raised typed). No retries:
        the caller resumes (downloads by Range, events by Last-Event-ID)."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise _connection_failed(method, self.http.base_url, path, exc) from exc


class AsyncTransport:
    """The asyncio twin of SyncTransport (httpx.AsyncClient)."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float | httpx.Timeout, policy: RetryPolicy,
                 event_hooks: Mapping[str, list] | None = None, sleep=asyncio.sleep) -> None:
        self.policy, self.sleep = policy, sleep
        self.http = httpx.AsyncClient(base_url=url, headers=_headers(api_key), timeout=_timeout(timeout),
                                      event_hooks=dict(event_hooks or {}))

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                await self.sleep(_wait_or_raise(self, method, path, idempotent, attempt, exc))
                continue
            if response.status_code < 400:
                return response
            await self.sleep(_wait_or_raise(self, method, path, idempotent, attempt, response))

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        try:
            async with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise _connection_failed(method, self.http.base_url, path, exc) from exc


__all__ = ["RETRY_STATUSES", "AsyncTransport", "DistilleryError", "RetryPolicy", "SyncTransport", "retry_after"]


def _wait_or_raise(transport: SyncTransport | AsyncTransport, method: str, path: str, idempotent: bool,
                   attempt: int, outcome: httpx.Response | httpx.TransportError) -> float:
    """How long to wait before retrying a failed attempt, or the typed error when it is not retried."""
    failed_response = isinstance(outcome, httpx.Response)
    status = outcome.status_code if failed_response else None
    if not _should_retry(idempotent, attempt, transport.policy, status):
        if failed_response:
            raise error_from_response(outcome)
        raise _connection_failed(method, transport.http.base_url, path, outcome) from outcome
    wait = transport.policy.delay(attempt, outcome) if failed_response else transport.policy.delay(attempt)
    log.info("%s %s: %s; retrying in %.2fs", method, path, status or type(outcome).__name__, wait)
    return wait
