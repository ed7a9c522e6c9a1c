"""client.jobs for AsyncClient: the same calls as `Jobs`, awaited; `list` and `events` are async iterators."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import Conflict, WaitTimeout
from .jobs_sync import RECONNECTABLE, NoEventStream, _Deadline, sse_headers, stream_timeout
from .resources import job_list_params
from .sse import SSEDecoder
from .types import Event, Job

if TYPE_CHECKING:
    from .aio import AsyncClient


class AsyncJobs:
    """Compression jobs.

        job = await client.jobs.create(recipe)
        async for event in client.jobs.events(job.id, follow=True):
            print(event.stage, event.step, event.total, event.loss)
        job = await client.jobs.wait(job.id, timeout=600)
    """

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, recipe: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """See `Jobs.create`: the Idempotency-Key (a new uuid unless given) is reused on retries."""
        key = idempotency_key or str(uuid.uuid4())
        response = await self._c.transport.request("POST", "/v1/jobs", idempotent=True, json=dict(recipe),
                                                   headers={"Idempotency-Key": key})
        return Job.model_validate(response.json())

    async def get(self, job_id: str) -> Job:
        return Job.model_validate(await self._c._get(f"/v1/jobs/{job_id}"))

    def list(self, *, status: str | Iterable[str] | None = None, created_after: datetime | str | None = None,
             created_before: datetime | str | None = None, limit: int | None = None,
             page_size: int = 100) -> AsyncIterator[Job]:
        """Jobs newest first across pages: ``async for job in client.jobs.list(status="running"): ...``"""
        params = job_list_params(status=status, created_after=created_after, created_before=created_before,
                                 page_size=page_size)
        return self._c._pages("/v1/jobs", Job.model_validate, params, limit)

    async def cancel(self, job_id: str) -> Job:
        """See `Jobs.cancel`: a job that already ended cancelled is returned, not a Conflict."""
        try:
            response = await self._c.transport.request("POST", f"/v1/jobs/{job_id}/cancel", idempotent=True)
        except Conflict:
            job = await self.get(job_id)
            if job.status == "cancelled":
                return job
            raise
        return Job.model_validate(response.json())

    async def report(self, job_id: str) -> dict[str, Any]:
        return await self._c._get(f"/v1/jobs/{job_id}/report")

    async def events(self, job_id: str, *, follow: bool = False, after: int | None = None,
                     timeout: float | None = None) -> AsyncIterator[Event]:
        """See `Jobs.events`; follow=True streams Server-Sent Events and resumes with Last-Event-ID."""
        if follow:
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                async for event in self._follow(job_id, after or 0, deadline):
                    yield event
            except _Deadline:
                raise WaitTimeout(f"the events of job {job_id} did not end within {timeout}s") from None
            return
        cursor = after or 0
        while True:
            page = await self._c._get(f"/v1/jobs/{job_id}/events", params={"after": cursor, "limit": 1000})
            for item in page["data"]:
                yield Event.model_validate(item)
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return

    async def _follow(self, job_id: str, last: int, deadline: float | None) -> AsyncIterator[Event]:
        policy, failures = self._c.policy, 0
        while True:
            decoder = SSEDecoder()
            try:
                async with self._c.transport.stream("GET", f"/v1/jobs/{job_id}/events", headers=sse_headers(last),
                                                    timeout=stream_timeout(deadline)) as response:
                    kind = response.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise NoEventStream(f"expected an event stream, got {kind or 'no content type'}")
                    failures = 0  # connected: only errors in a row count against the retries
                    async for line in response.aiter_lines():
                        if deadline is not None and time.monotonic() > deadline:
                            raise _Deadline
                        sse = decoder.feed(line)
                        if sse is None:
                            continue
                        if sse.event == "end":
                            return
                        if sse.event == "progress":
                            event = Event.model_validate_json(sse.data)
                            last = event.seq
                            yield event
            except RECONNECTABLE as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise _Deadline from None
                if failures >= policy.retries:
                    raise
                wait = policy.delay(failures, getattr(exc, "response", None))
                failures += 1
            else:
                # closed without `end` (a restart, a proxy's time limit): reconnect after the stream's retry
                # interval, as an EventSource does; a job that is gone answers the reconnection with 404
                wait = (decoder.retry_ms if decoder.retry_ms is not None else 2000) / 1000
            await asyncio.sleep(wait)

    async def wait(self, job_id: str, *, timeout: float | None = None, poll_interval: float | None = None) -> Job:
        """See `Jobs.wait`: the finished job, or WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if poll_interval is None:
            try:
                async for _ in self._follow(job_id, 0, deadline):
                    pass
            except NoEventStream:
                pass  # poll below
            except _Deadline:
                job = await self.get(job_id)
                raise WaitTimeout(f"job {job_id} did not finish within {timeout}s", job=job) from None
            job = await self.get(job_id)
            if job.finished:
                return job
        while True:
            job = await self.get(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout}s ({job.status})", job=job)
            pause = poll_interval or 1.0
            await asyncio.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
