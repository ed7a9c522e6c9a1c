"""Limits on slow requests, so that one tenant cannot stall the API for the others.

A slow request (a job submission and its dry run, an upload, a model registration) holds one of the threadpool's
worker threads for seconds while it runs. Two limits keep those threads for everyone:

- per owner: at most `DISTILLERY_MAX_CONCURRENT_SLOW_PER_KEY` slow requests in progress at once (the keys of one
  owner share them: the owner is the tenant); the next one is refused at once with 429 and Retry-After;
- in all: slow requests never take more than the threadpool's size less `FAST_THREADS` (40 - 16 = 24 with anyio's
  default), so that fast requests (reads, listings, cancels) always find a thread; past it, 503 and Retry-After.

Both are counted in this process, on its event loop (so no lock is needed): with several API processes behind a
balancer each one counts its own. Health endpoints use no thread from this pool (health.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import Depends, Request

from ..errors import AppError
from .deps import AppSettings, Owner

FAST_THREADS = 16  # threads of the pool that slow requests leave to the others
RETRY_AFTER_SECONDS = 5  # slow requests take seconds: by then one has usually finished


class TooManySlowRequests(AppError):
    status, code, title = 429, "too_many_requests", "Too many requests"


class SlowWorkSaturated(AppError):
    status, code, title = 503, "overloaded", "Service unavailable"


class SlowWork:
    """How many slow requests are in progress, by owner and in all (one per app, on its event loop)."""

    def __init__(self) -> None:
        self.by_owner: Counter[str] = Counter()
        self.total = 0

    def enter(self, owner: str, per_owner: int) -> None:
        if self.by_owner[owner] >= per_owner:
            raise TooManySlowRequests(
                f"this API key's owner already has {self.by_owner[owner]} slow requests (job submissions, "
                f"uploads, model registrations) in progress, the most allowed at once; retry after "
                f"{RETRY_AFTER_SECONDS} s", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        limit = max(1, anyio.to_thread.current_default_thread_limiter().total_tokens - FAST_THREADS)
        if self.total >= limit:
            raise SlowWorkSaturated(f"the service has {self.total} slow requests in progress, as many as it takes "
                                    f"at once; retry after {RETRY_AFTER_SECONDS} s",
                                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.by_owner[owner] += 1
        self.total += 1

    def leave(self, owner: str) -> None:
        self.by_owner[owner] -= 1
        if self.by_owner[owner] <= 0:
            del self.by_owner[owner]  # no entry left behind per owner ever seen
        self.total -= 1


def slow_work_of(request: Request) -> SlowWork:
    state = request.app.state
    if not hasattr(state, "slow_work"):  # made on first use, on the event loop: no race
        state.slow_work = SlowWork()
    return state.slow_work


async def slow_request(request: Request, owner: Owner, settings: AppSettings) -> AsyncIterator[None]:
    """Counts the request as slow from before its endpoint runs until it ends (async: on the event loop)."""
    work = slow_work_of(request)
    work.enter(owner, settings.max_concurrent_slow_per_key)
    try:
        yield
    finally:
        work.leave(owner)


# `dependencies=[SLOW]` on a route; "function" scope: the slot is given back when the endpoint returns, before
# the response is sent (and it may depend on the function-scoped session that authentication uses).
SLOW: Any = Depends(slow_request, scope="function")
