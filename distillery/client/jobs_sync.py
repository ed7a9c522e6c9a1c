"""client.jobs: submit, read, list, cancel, follow and wait for compression jobs (synchronous)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from .errors import Conflict, ConnectionFailed, DistilleryError, RateLimited, ServiceUnavailable, WaitTimeout
from .resources import job_list_params
from .sse import SSEDecoder
from .types import Event, Job

if TYPE_CHECKING:
    from .sync import Client

STREAM_READ_S = 60.0  # the service sends a keep-alive comment every 15 s
RECONNECTABLE = (ConnectionFailed, ServiceUnavailable, RateLimited)


class _Deadline(Exception):
    pass


class NoEventStream(DistilleryError):
    """The events URL did not answer with text/event-stream (a proxy in the way): `wait` polls instead."""


def stream_timeout(deadline: float | None) -> httpx.Timeout:
    read = STREAM_READ_S if deadline is None else max(0.1, min(STREAM_READ_S, deadline - time.monotonic() + 0.5))
    return httpx.Timeout(30.0, connect=10.0, read=read)


def sse_headers(last: int) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last:
        headers["Last-Event-ID"] = str(last)
    return headers


class Jobs:
    """Compression jobs.

        job = client.jobs.create(recipe)                 # an Idempotency-Key is set for you
        for event in client.jobs.events(job.id, follow=True):
            print(event.stage, event.step, event.total, event.loss)
        job = client.jobs.get(job.id)
    """

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, recipe: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Submit a recipe whose teacher is `{"model": "mdl_..."}` (or hub/bundled) and whose data names dataset
        ids. The service dry-runs it: a recipe that cannot run is a ValidationError naming the field.

        The call carries an Idempotency-Key (a new uuid unless you pass one) and reuses it on its own retries,
        so a retried submission never creates a second job. Pass your own key to make a resubmission after a
        crash safe as well."""
        key = idempotency_key or str(uuid.uuid4())
        response = self._c.transport.request("POST", "/v1/jobs", idempotent=True, json=dict(recipe),
                                             headers={"Idempotency-Key": key})
        return Job.model_validate(response.json())

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._c._get(f"/v1/jobs/{job_id}"))

    def list(self, *, status: str | Iterable[str] | None = None, created_after: datetime | str | None = None,
             created_before: datetime | str | None = None, limit: int | None = None,
             page_size: int = 100) -> Iterator[Job]:
        """Jobs newest first, following the cursor page after page; at most `limit` of them.

            running = list(client.jobs.list(status=["queued", "running"]))
        """
        params = job_list_params(status=status, created_after=created_after, created_before=created_before,
                                 page_size=page_size)
        return self._c._pages("/v1/jobs", Job.model_validate, params, limit)

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job never starts, a running one stops at its next step (`cancelling`, then
        `cancelled`). Idempotent: a job that already ended cancelled is returned; one that ended otherwise
        is a Conflict."""
        try:
            response = self._c.transport.request("POST", f"/v1/jobs/{job_id}/cancel", idempotent=True)
        except Conflict:
            job = self.get(job_id)
            if job.status == "cancelled":
                return job
            raise
        return Job.model_validate(response.json())

    def report(self, job_id: str) -> dict[str, Any]:
        """The engine's report (per stage, per task). Conflict before the job has finished."""
        return self._c._get(f"/v1/jobs/{job_id}/report")

    def events(self, job_id: str, *, follow: bool = False, after: int | None = None,
               timeout: float | None = None) -> Iterator[Event]:
        """The job's progress events after seq `after`, oldest first.

        follow=False: the events recorded so far (pages). follow=True: the Server-Sent Events stream, live,
        ending when the job has finished and every event is out; a dropped connection is re-opened with
        Last-Event-ID, so no event is lost or repeated. With `timeout`, following stops with WaitTimeout.

            for event in client.jobs.events(job.id, follow=True):
                print(f"{event.stage} {event.step}/{event.total} loss={event.loss}")
        """
        if follow:
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                yield from self._follow(job_id, after or 0, deadline)
            except _Deadline:
                raise WaitTimeout(f"the events of job {job_id} did not end within {timeout}s") from None
            return
        cursor = after or 0
        while True:
            page = self._c._get(f"/v1/jobs/{job_id}/events", params={"after": cursor, "limit": 1000})
            for item in page["data"]:
                yield Event.model_validate(item)
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return

    def _follow(self, job_id: str, last: int, deadline: float | None) -> Iterator[Event]:
        policy, failures = self._c.policy, 0
        while True:
            decoder = SSEDecoder()
            try:
                with self._c.transport.stream("GET", f"/v1/jobs/{job_id}/events", headers=sse_headers(last),
                                              timeout=stream_timeout(deadline)) as response:
                    kind = response.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise NoEventStream(f"expected an event stream, got {kind or 'no content type'}")
                    failures = 0  # connected: only errors in a row count against the retries
                    for line in response.iter_lines():
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
            time.sleep(wait)

    def wait(self, job_id: str, *, timeout: float | None = None, poll_interval: float | None = None) -> Job:
        """Block until the job has finished and return it (check `job.status`; a failed job is returned, not
        raised). It follows the event stream, or polls every `poll_interval` seconds when given. Raises
        WaitTimeout (with the last known `job`) after `timeout` seconds.

            job = client.jobs.wait(job.id, timeout=3600)
            if job.status != "succeeded":
                print(job.failure.code, job.failure.message)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if poll_interval is None:
            try:
                for _ in self._follow(job_id, 0, deadline):
                    pass
            except NoEventStream:
                pass  # poll below
            except _Deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout}s", job=self.get(job_id)) from None
            job = self.get(job_id)
            if job.finished:
                return job
        while True:
            job = self.get(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout}s ({job.status})", job=job)
            pause = poll_interval or 1.0
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
