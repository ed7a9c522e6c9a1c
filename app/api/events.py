"""GET /v1/jobs/{id}/events: a job's progress, as JSON pages or as Server-Sent Events.

The stream polls the database (the source of truth, whichever process wrote the events) with a fresh
short session per poll, off the event loop, and never holds a transaction open between polls.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Header, Query
from fastapi.responses import StreamingResponse

from ..db.base import session_scope
from ..errors import NotFound, Unprocessable
from ..repositories import events as repo
from ..repositories.jobs import TERMINAL
from .deps import AppSettings, Db, Owner
from .docs import JobId, problems
from .routing import api_router
from .schemas_jobs import EventOut, EventPage

router = api_router(tags=["jobs"])

POLL_S = 0.3  # how often a stream looks for new events
HEARTBEAT_S = 15.0  # a comment this often keeps proxies from closing an idle stream
MAX_CURSOR = 2**63 - 1  # BIGINT
BATCH = 500  # events read per poll; a full batch is followed by another read at once

SSE_EXAMPLE = ('retry: 2000\n\nid: 1\nevent: progress\ndata: {"seq": 1, "time": "2025-11-29T10:00:03Z", '
               '"stage": "teacher", "message": "loading the teacher", "step": null, "total": null, "loss": null}\n\n'
               ': keep-alive\n\nevent: end\ndata: {"status": "succeeded"}\n\n')


def _poll(url: str, owner: str, job_id: str, after: int) -> tuple[str | None, list[EventOut]]:
    # Status first, then events: if the job was terminal when read, every event it will ever have is
    # already committed, so the events read next are the last ones.
    with session_scope(url) as session:
        status = repo.job_status(session, owner, job_id)
        rows = repo.events_after(session, owner, job_id, after, BATCH) if status else []
        return status, [EventOut.from_row(r) for r in rows]


def parse_last_event_id(raw: str, what: str) -> int:
    """A Last-Event-ID header as a cursor. ASCII digits only (str.isdigit() accepts "²", which int() refuses),
    and within BIGINT, so that nothing unrepresentable reaches the database (a 422, never a 500)."""
    value = raw.strip()
    if not re.fullmatch(r"[0-9]{1,19}", value) or int(value) > MAX_CURSOR:
        raise Unprocessable(f"Last-Event-ID must be {what} (a non-negative integer)",
                            errors=[{"field": "Last-Event-ID", "message": f"not {what}"}])
    return int(value)


def _sse(event: EventOut) -> str:
    return f"id: {event.seq}\nevent: progress\ndata: {event.model_dump_json()}\n\n"


async def _stream(url: str, owner: str, job_id: str, after: int) -> AsyncIterator[str]:
    """Events after `after`, then new ones as they come; `event: end` once the job is terminal and all
    its events are out. A client that disconnects cancels this generator (Starlette watches for it)."""
    yield "retry: 2000\n\n"  # how long an EventSource waits before it reconnects with Last-Event-ID
    last, quiet_since = after, time.monotonic()
    while True:
        status, events = await anyio.to_thread.run_sync(_poll, url, owner, job_id, last)
        if status is None:
            return  # the job is gone (deleted): nothing more will come
        for event in events:
            yield _sse(event)
            last = event.seq
        if events:
            quiet_since = time.monotonic()
        if len(events) == BATCH:
            continue
        if status in TERMINAL:
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if time.monotonic() - quiet_since >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_S)


@router.get(
    "/jobs/{job_id}/events", response_model=EventPage, summary="A job's progress events (pages or SSE)",
    description="JSON pages of events with seq > `after`, oldest first. With `Accept: text/event-stream`, a "
    "Server-Sent Events stream instead: each event as `id: <seq>`, `event: progress`, `data: <json>`; a "
    "`: keep-alive` comment every 15 s; `event: end` with the job's final status once it has finished and every "
    "event is sent. Reconnect with `Last-Event-ID` (or `after`) to resume where the stream left off.",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}}},
               **problems(401, 404, 422)},
)
def job_events(job_id: JobId, owner: Owner, db: Db, settings: AppSettings,
               after: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="a seq: events after it",
                                           examples=[41])] = 0,
               limit: Annotated[int, Query(ge=1, le=1000, examples=[100])] = 100,
               accept: Annotated[str | None, Header(description="text/event-stream for a stream",
                                                    examples=["text/event-stream"])] = None,
               last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", examples=["41"],
                                                           description="SSE: resume after this seq")] = None):
    if repo.job_status(db, owner, job_id) is None:
        raise NotFound(f"no job {job_id}")  # a plain problem+json, before any stream starts
    if accept and "text/event-stream" in accept.lower():
        if last_event_id is not None:
            after = parse_last_event_id(last_event_id, "an event seq")  # a reconnecting EventSource resumes
        db.commit()  # end the request's transaction now: the stream may stay open for hours
        return StreamingResponse(_stream(settings.sqlalchemy_url, owner, job_id, after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    events = repo.events_after(db, owner, job_id, after, limit + 1)
    has_more = len(events) > limit
    data = [EventOut.from_row(e) for e in events[:limit]]
    return EventPage(data=data, has_more=has_more, next_cursor=data[-1].seq if data else after)
